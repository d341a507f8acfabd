"""`kubectl exec` latency and `kubectl logs` throughput through the cloud-edge stream tunnel, on real podman.

One process runs a cloud kernel (embedded apiserver + cloudstream) and an edge kernel (edged on podman +
edgestream + a small metamanager stand-in that hands edged the pod); the edge dials the cloud's tunnel
with a node certificate from the cloud CA. A busybox pod on the edge writes ``--log-mb`` MB to stdout.

- ``exec_p50_ms`` / ``exec_p99_ms``: wall time of ``kubectl exec POD -- true`` (the real kubectl process:
  start, pod GET, websocket upgrade, apiserver -> cloudstream -> tunnel -> edgestream -> podman exec ->
  exit status back), ``--execs`` runs after two warm-ups. ``kubectl_get_p50_ms`` (``kubectl get pod``) is
  the yardstick in the same run: what kubectl itself costs before any stream; ``podman_exec_p50_ms`` is
  podman's own exec through its API socket, with no tunnel and no kubectl.
- ``logs_mb_per_s``: ``kubectl logs POD`` of the whole log, bytes received / wall time, best of 3.
  ``podman_logs_mb_per_s`` is ``podman logs`` of the same container, the yardstick in the same run.
- ``stats_p50_ms`` / ``stats_p99_ms``: ``GET /stats/summary`` on cloudstream's kubelet API (what the node
  proxy and ``kubectl top`` ask): tunnel -> edgestream -> /proc and podman's stats of each container ->
  the Summary back, one keep-alive HTTPS client, ``--stats`` runs after a warm-up (whose CPU sample the
  rest reuse). ``podman_stats_p50_ms`` is podman's own stats call for the pod's container, the yardstick.

Run: ``.venv/bin/python bench/stream.py [--execs 40] [--log-mb 20] [--stats 40]``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import trio

from kubeedge import BaseModule, Context, Kernel, Message, Plugins
from kubeedge.plugins.common import pki
from kubeedge.plugins.edged.images import build_busybox_image
from kubeedge.profile import build_profile

IMAGE = "localhost/busybox:latest"
LABEL_NODE = "io.kubeedge.node"
KUBECTL = str(Path(sys.executable).parent / "kubectl")
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""


class Store(BaseModule):
    """metamanager's place: hands the pod to edged, answers its queries, notes when the pod runs."""

    name = "metamanager"
    group = "meta"

    def __init__(self) -> None:
        super().__init__({})
        self.objects: dict[str, Any] = {}
        self.running: set[str] = set()
        self.changed = trio.Event()
        self.ctx: Context | None = None

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        self.ctx = ctx
        task_status.started()
        async for message in ctx.bus.channel(self.name):
            parts = message.resource.split("/")
            if message.operation == "query":
                if len(parts) == 2:
                    content: Any = [o for k, o in self.objects.items() if k.startswith(f"{parts[0]}/{parts[1]}/")]
                    ctx.send_resp(message.reply(content, source=self.name))
                elif message.resource in self.objects:
                    ctx.send_resp(message.reply(self.objects[message.resource], source=self.name))
                else:
                    ctx.send_resp(message.reply("not found", operation="error", source=self.name))
            elif len(parts) == 3 and parts[1] == "podstatus" and isinstance(message.content, dict):
                statuses = (message.content.get("Status") or {}).get("containerStatuses") or []
                if statuses and all("running" in (s.get("state") or {}) for s in statuses):
                    self.running.add(parts[2])
                    self.changed.set()
                    self.changed = trio.Event()

    async def put(self, pod: dict[str, Any]) -> None:
        resource = f"default/pod/{pod['metadata']['name']}"
        self.objects[resource] = pod
        assert self.ctx is not None
        await self.ctx.send(
            "edged", Message(source="metamanager", group="resource", operation="insert", resource=resource, content=pod)
        )


def podman(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["podman", *args], env=env, capture_output=True, check=False)


async def start(nursery: trio.Nursery, profile: dict[str, Any], data_dir: Path, extra: list[Any]) -> Kernel:
    built = build_profile(profile, data_dir=data_dir)
    plugins = Plugins()
    names = list(profile["modules"])
    plugins.load("module", names)
    kernel = Kernel(built, plugins, [*extra, *(plugins.module(n, profile["modules"][n], built) for n in names)])
    await nursery.start(lambda task_status: kernel.run(handle_signals=False, task_status=task_status))
    return kernel


def module(kernel: Kernel, name: str) -> Any:
    return next(m for m in kernel.modules if m.name == name)


async def bench(args: argparse.Namespace, work: Path, env: dict[str, str]) -> dict[str, Any]:
    node = f"edge-bench-{uuid.uuid4().hex[:6]}"
    sockets = Path(tempfile.mkdtemp(prefix="ke-", dir="/tmp"))
    home = work / "home"
    home.mkdir()
    kenv = dict(os.environ, HOME=str(home))
    result: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        cloud = await start(
            nursery,
            {
                "role": "cloud",
                "node": {"name": "cloud"},
                "modules": {
                    "apiserver": {"port": 0, "scheduler": False},
                    "cloudstream": {"address": "127.0.0.1", "tunnelPort": 0, "streamPort": 0},
                },
            },
            work / "cloud",
            [],
        )
        ca = pki.CA.ensure(work / "cloud" / "pki")
        csr, key = pki.make_csr(node)
        (work / "edge" / "pki").mkdir(parents=True)
        (work / "edge" / "pki" / "ca.crt").write_bytes(ca.pem)
        pki.write_private(work / "edge" / "pki" / "edge.key", pki.key_pem(key))
        (work / "edge" / "pki" / "edge.crt").write_bytes(pki.cert_pem(pki.sign_csr(ca, csr, node=node)))
        store = Store()
        edge = await start(
            nursery,
            {
                "role": "edge",
                "node": {"name": node},
                "modules": {
                    "edged": {
                        "runtime": "podman",
                        "podman": {"socket": str(sockets / "podman.sock"), "containersConf": "auto"},
                        "podNetwork": "none",
                        "relistInterval": 0.2,
                        "imageGC": {"intervalSeconds": 0},
                        "nodeIP": "127.0.0.1",
                    },
                    "edgestream": {"server": f"127.0.0.1:{module(cloud, 'cloudstream').tunnel_port}"},
                },
            },
            work / "edge",
            [store],
        )
        with trio.fail_after(20):
            await module(cloud, "cloudstream").tunnels.wait_connected(node)
        kubeconfig = str(module(cloud, "apiserver").kubeconfig_path)
        kubectl = [KUBECTL, "--kubeconfig", kubeconfig, "--cache-dir", str(home / "cache")]
        lines = args.log_mb * 10_000  # 100-byte lines
        line = "0123456789" * 9 + "abcdefghi"  # 99 characters and a newline
        script = f"yes {line} | head -n {lines}; echo written; sleep 3600"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "bench", "namespace": "default", "uid": str(uuid.uuid4())},
            "spec": {
                "nodeName": node,
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "main", "image": IMAGE, "command": ["sh", "-c", script]}],
            },
        }
        (work / "pod.json").write_text(json.dumps(pod))
        await trio.run_process(
            [*kubectl, "create", "--validate=false", "-f", str(work / "pod.json")], env=kenv, capture_stdout=True
        )
        await store.put(pod)
        with trio.fail_after(60):
            while "bench" not in store.running:
                await store.changed.wait()

        expected = lines * 100 + len(b"written\n")
        with trio.fail_after(120):  # no event says the container has written it all: its last line does
            while True:
                tail = await trio.run_process([*kubectl, "logs", "bench", "--tail", "1"], env=kenv, capture_stdout=True)
                if tail.stdout == b"written\n":
                    break
                await trio.sleep(0.2)

        timings = []
        for _ in range(args.execs + 2):
            began = time.perf_counter()
            await trio.run_process([*kubectl, "exec", "bench", "--", "true"], env=kenv, capture_stdout=True)
            timings.append((time.perf_counter() - began) * 1000)
        timings = sorted(timings[2:])
        result["exec_p50_ms"] = round(statistics.median(timings), 1)
        result["exec_p99_ms"] = round(timings[min(len(timings) - 1, int(len(timings) * 0.99))], 1)

        gets = []
        for _ in range(10):  # the yardstick: a kubectl call that does not stream (process start, TLS, one GET)
            began = time.perf_counter()
            await trio.run_process([*kubectl, "get", "pod", "bench"], env=kenv, capture_stdout=True)
            gets.append((time.perf_counter() - began) * 1000)
        result["kubectl_get_p50_ms"] = round(statistics.median(gets), 1)

        rates = []
        for _ in range(3):
            began = time.perf_counter()
            logs = await trio.run_process([*kubectl, "logs", "bench"], env=kenv, capture_stdout=True)
            elapsed = time.perf_counter() - began
            if len(logs.stdout) != expected:
                raise SystemExit(f"kubectl logs gave {len(logs.stdout)} bytes, expected {expected}")
            rates.append(len(logs.stdout) / elapsed / 1e6)
        result["logs_mb_per_s"] = round(max(rates), 1)
        containers = json.loads(
            podman(env, "ps", "--filter", f"label={LABEL_NODE}={node}", "--format", "json").stdout or b"[]"
        )
        cid = next(c["Id"] for c in containers if not c.get("IsInfra"))
        began = time.perf_counter()
        direct = await trio.run_process(["podman", "logs", cid], env=env, capture_stdout=True, capture_stderr=True)
        result["podman_logs_mb_per_s"] = round(len(direct.stdout) / (time.perf_counter() - began) / 1e6, 1)
        # the yardstick for exec: podman's own exec (create, start attached, inspect) on edged's API socket
        import httpx

        transport = httpx.AsyncHTTPTransport(uds=str(sockets / "podman.sock"))
        async with httpx.AsyncClient(transport=transport, base_url="http://podman/v1.41") as api:
            direct_execs = []
            for _ in range(20):
                began = time.perf_counter()
                body = {"Cmd": ["true"], "AttachStdout": True, "AttachStderr": True}
                exec_id = (await api.post(f"/containers/{cid}/exec", json=body)).json()["Id"]
                await api.post(f"/exec/{exec_id}/start", json={"Detach": False, "Tty": False})
                await api.get(f"/exec/{exec_id}/json")
                direct_execs.append((time.perf_counter() - began) * 1000)
            direct_stats = []
            for _ in range(20):
                began = time.perf_counter()
                (await api.get(f"/containers/{cid}/stats", params={"stream": "false"})).raise_for_status()
                direct_stats.append((time.perf_counter() - began) * 1000)
        result["podman_exec_p50_ms"] = round(statistics.median(direct_execs), 1)
        result["podman_stats_p50_ms"] = round(statistics.median(direct_stats), 1)

        stream_module = module(cloud, "cloudstream")
        context = ssl.create_default_context(cafile=stream_module.paths["ca"])
        context.load_cert_chain(stream_module.paths["clientCert"], stream_module.paths["clientKey"])
        async with httpx.AsyncClient(
            base_url=f"https://127.0.0.1:{stream_module.stream_port}", verify=context, headers={"x-kubeedge-node": node}
        ) as kubelet:
            stats = []
            for _ in range(args.stats + 1):
                began = time.perf_counter()
                reply = await kubelet.get("/stats/summary")
                stats.append((time.perf_counter() - began) * 1000)
                if reply.status_code != 200 or not any(p["podRef"]["name"] == "bench" for p in reply.json()["pods"]):
                    raise SystemExit(f"/stats/summary: {reply.status_code} {reply.text[:300]}")
        stats = sorted(stats[1:])
        result["stats_p50_ms"] = round(statistics.median(stats), 1)
        result["stats_p99_ms"] = round(stats[min(len(stats) - 1, int(len(stats) * 0.99))], 1)
        result["exec_runs"] = args.execs
        result["log_bytes"] = expected

        edge.stop()
        cloud.stop()
    ids = [
        c["Id"]
        for c in json.loads(
            podman(env, "ps", "-a", "--filter", f"label={LABEL_NODE}={node}", "--format", "json").stdout or b"[]"
        )
    ]
    pods = json.loads(
        podman(env, "pod", "ps", "--filter", f"label={LABEL_NODE}={node}", "--format", "json").stdout or b"[]"
    )
    if pods:
        podman(env, "pod", "rm", "-f", "-t", "0", *[p["Id"] for p in pods])
    if ids:
        podman(env, "rm", "-f", "-t", "0", *ids)
    shutil.rmtree(sockets, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--execs", type=int, default=40)
    parser.add_argument("--log-mb", type=int, default=20)
    parser.add_argument("--stats", type=int, default=40, help="timed /stats/summary requests")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ke-bench-stream-"))
    conf = work / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    env = dict(os.environ, CONTAINERS_CONF=str(conf))
    try:
        build_busybox_image(env=env, image=IMAGE)
        result = trio.run(bench, args, work, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

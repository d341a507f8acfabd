"""Pod start latency and edged memory on real podman.

The edge runs in this process: the real metamanager and edged (podman runtime, its own API service) plus a
stand-in for edgehub named ``websocket`` that plays the cloud: it sends each pod to metamanager as the
cloud would and timestamps the Running pod status metamanager uploads. ``start_*`` is that interval
(persist, forward, create, start, status, upload). Pods are started one at a time, then all stay running
while the process RSS is read (``rss_mb_20_pods``: edged, metamanager, the kernel and Python together;
podman's own service and conmon processes are not included). ``apply_to_running_p99_s`` needs the
embedded cloud: a cloud and an edge (with edged) run as ``kubeedge run`` processes joined with keadm, and
pods are created through the API until the API shows them Running.

Run: ``.venv/bin/python bench/pods.py [--pods 20]``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import trio

from kubeedge import BaseModule, Context, Kernel, Message, Plugins
from kubeedge.plugins.edged.images import BUSYBOX_IMAGE, build_busybox_image
from kubeedge.plugins.edged.podman import CONTAINERS_CONF
from kubeedge.profile import build_profile


class Cloud(BaseModule):
    """Takes edgehub's place on the bus: sends pods down, records what metamanager uploads."""

    name = "websocket"
    group = "hub"

    def __init__(self) -> None:
        super().__init__({})
        self.ctx: Context | None = None
        self.running_at: dict[str, float] = {}
        self.changed = trio.Event()

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        self.ctx = ctx
        task_status.started()
        async for message in ctx.bus.channel(self.name):
            parts = message.resource.split("/")
            if len(parts) == 3 and parts[1] == "podstatus" and isinstance(message.content, dict):
                status = message.content.get("Status") or {}
                if status.get("phase") == "Running" and parts[2] not in self.running_at:
                    self.running_at[parts[2]] = trio.current_time()
                    self.changed.set()
                    self.changed = trio.Event()

    async def send_pod(self, pod: dict[str, Any], operation: str = "insert") -> None:
        assert self.ctx is not None
        meta = pod["metadata"]
        await self.ctx.send(
            "metamanager",
            Message(
                source="edgecontroller",
                group="resource",
                operation=operation,
                resource=f"default/pod/{meta['name']}",
                resource_version=str(meta.get("resourceVersion", "1")),
                content=pod,
            ),
        )

    async def wait_running(self, name: str) -> float:
        with trio.fail_after(60):
            while name not in self.running_at:
                await self.changed.wait()
        return self.running_at[name]


def pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4()), "resourceVersion": "1"},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX_IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sleep", "3600"],
                }
            ],
        },
    }


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def remove_containers(node: str, conf: Path) -> None:
    env = dict(os.environ, CONTAINERS_CONF=str(conf))
    pods = subprocess.run(
        ["podman", "pod", "ps", "-q", "--filter", f"label=io.kubeedge.node={node}"],
        env=env,
        capture_output=True,
        text=True,
    )
    if pods.stdout.split():  # a pod takes its infra and member containers with it
        subprocess.run(["podman", "pod", "rm", "-f", "-t", "0", *pods.stdout.split()], env=env, capture_output=True)
    listed = subprocess.run(
        ["podman", "ps", "-aq", "--filter", f"label=io.kubeedge.node={node}"], env=env, capture_output=True, text=True
    )
    if listed.stdout.split():
        subprocess.run(["podman", "rm", "-f", "-t", "0", *listed.stdout.split()], env=env, capture_output=True)


async def bench(count: int, work: Path) -> dict[str, Any]:
    sockets = Path(tempfile.mkdtemp(prefix="ke-bench-", dir="/tmp"))
    node = f"bench-{uuid.uuid4().hex[:6]}"
    edged_config = {
        "runtime": "podman",
        "podman": {"socket": str(sockets / "podman.sock"), "startService": True, "containersConf": "auto"},
        "podNetwork": "none",
        "nodeIP": "127.0.0.1",
        "imageGC": {"intervalSeconds": 0},
    }
    modules_config = {"metamanager": {}, "edged": edged_config}
    profile = build_profile({"role": "edge", "node": {"name": node}, "modules": modules_config}, data_dir=work)
    plugins = Plugins()
    plugins.load("module", ["metamanager", "edged"])
    cloud = Cloud()
    modules = [cloud, *(plugins.module(n, c, profile) for n, c in modules_config.items())]
    kernel = Kernel(profile, plugins, modules)
    latencies: list[float] = []
    pods = [pod(f"bench-{i}") for i in range(count)]
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: kernel.run(handle_signals=False, task_status=task_status))
            for each in pods:
                began = trio.current_time()
                await cloud.send_pod(each)
                latencies.append(await cloud.wait_running(each["metadata"]["name"]) - began)
            memory = rss_mb()
            kernel.stop()
    finally:
        await trio.to_thread.run_sync(remove_containers, node, work / "edged" / "podman" / "containers.conf")
        shutil.rmtree(sockets, ignore_errors=True)
    return {
        "start_p50_s": round(percentile(latencies, 0.50), 3),
        "start_p99_s": round(percentile(latencies, 0.99), 3),
        f"rss_mb_{count}_pods" if count != 20 else "rss_mb_20_pods": round(memory, 1),
        "pods": count,
        "notes": "start_*: metamanager receives the pod from the cloud's side -> Running status uploaded, one pod at"
        " a time, podman 4.3 via its REST API, each pod a podman pod (infra container + 1 container), network"
        " none; apply_to_running_*: pods created through the embedded API (cloud and edge as `kubeedge run`"
        " processes joined with keadm) until the API shows them Running;"
        " rss is this whole edge process (kernel + metamanager + edged), not podman's service or conmon",
    }


async def apply_to_running(count: int, work: Path) -> list[float]:
    """kubectl-apply-equivalent pod creates on the embedded cloud -> Running in the API, one at a time."""
    from kubeedge.plugins.demo.run import Demo, api, join_edge, start_cloud

    demo = Demo(root=work / "journey", node=f"apply-{uuid.uuid4().hex[:6]}", out=sys.stderr)
    demo.root.mkdir(parents=True)
    sockets = Path(tempfile.mkdtemp(prefix="ke-bench-", dir="/tmp"))
    edged = {
        "runtime": "podman",
        "podman": {"socket": str(sockets / "podman.sock"), "startService": True, "containersConf": "auto"},
        "podNetwork": "none",
        "nodeIP": "127.0.0.1",
        "imageGC": {"intervalSeconds": 0},
    }
    latencies: list[float] = []
    try:
        await start_cloud(demo)
        await join_edge(demo, in_process_mapper=False, extra_modules={"edged": edged})
        core = api(demo).core
        for i in range(count):
            body = pod(f"apply-{i}")
            del body["metadata"]["uid"], body["metadata"]["resourceVersion"]
            body["spec"]["nodeName"] = demo.node
            began = trio.current_time()
            await trio.to_thread.run_sync(partial(core.create_namespaced_pod, "default", body))
            read = partial(core.read_namespaced_pod, body["metadata"]["name"], "default", _preload_content=False)
            with trio.fail_after(60):
                while True:  # the API has no push to trio here; sample the pod's phase
                    raw = await trio.to_thread.run_sync(read)
                    if (json.loads(raw.data).get("status") or {}).get("phase") == "Running":
                        break
                    await trio.sleep(0.02)
            latencies.append(trio.current_time() - began)
    finally:
        with trio.CancelScope(shield=True):
            await demo.stop()
        await trio.to_thread.run_sync(
            remove_containers, demo.node, demo.edge_dir / "edged" / "podman" / "containers.conf"
        )
        shutil.rmtree(sockets, ignore_errors=True)
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--apply-pods", type=int, default=10, help="pods created through the embedded API")
    args = parser.parse_args()
    if shutil.which("podman") is None:
        print(json.dumps({"error": "podman is not installed"}))
        return 1
    work = Path(tempfile.mkdtemp(prefix="kubeedge-bench-pods-"))
    try:
        conf = work / "containers.conf"
        conf.write_text(CONTAINERS_CONF)
        build_busybox_image(env=dict(os.environ, CONTAINERS_CONF=str(conf)))
        result = trio.run(bench, args.pods, work / "data")
        applied = trio.run(apply_to_running, args.apply_pods, work)
        result["apply_to_running_p50_s"] = round(percentile(applied, 0.50), 3)
        result["apply_to_running_p99_s"] = round(percentile(applied, 0.99), 3)
        result["apply_pods"] = args.apply_pods
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

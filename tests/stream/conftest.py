"""Stream tests run the real thing: a cloud kernel (apiserver + cloudstream), an edge kernel (a small
metamanager stand-in + edged on real podman + edgestream) with a node certificate from the cloud CA, a
busybox pod on the edge and the real kubectl. If podman cannot run here, the tests fail with its words."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from kubeedge import BaseModule, Context, Kernel, Message, Plugins
from kubeedge.plugins.common import pki
from kubeedge.plugins.edged.images import build_busybox_image
from kubeedge.profile import build_profile

SESSION = uuid.uuid4().hex[:6]
NODE_PREFIX = f"edge-s{SESSION}-"
IMAGE = "localhost/busybox:latest"
LABEL_NODE = "io.kubeedge.node"  # edged's label: which node's container it is
KUBECTL = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubectl")

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""


@dataclass
class PodmanHost:
    env: dict[str, str]

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True, check=check)

    def remove_node(self, node: str) -> None:
        out = self.podman("pod", "ps", "--filter", f"label={LABEL_NODE}={node}", "--format", "json", check=False).stdout
        pods = [p["Id"] for p in json.loads(out or "[]")]
        if pods:
            self.podman("pod", "rm", "-f", "-t", "0", *pods, check=False)
        out = self.podman("ps", "-a", "--filter", f"label={LABEL_NODE}={node}", "--format", "json", check=False).stdout
        ids = [c["Id"] for c in json.loads(out or "[]")]
        if ids:
            self.podman("rm", "-f", "-t", "0", *ids, check=False)


@pytest.fixture(scope="session")
def podman_host() -> Iterator[PodmanHost]:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (apt-get install podman runc busybox-static): the stream tests need it")
    home = Path(tempfile.mkdtemp(prefix="ke-stream-podman-"))
    conf = home / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    host = PodmanHost(dict(os.environ, CONTAINERS_CONF=str(conf)))
    try:
        build_busybox_image(env=host.env, image=IMAGE)  # edged's own offline image builder; no-op when present
    except OSError as exc:
        pytest.fail(f"cannot build the offline busybox image: {exc}")
    probe = host.podman("run", "--rm", "--network=none", IMAGE, "true", check=False)
    if probe.returncode != 0:
        pytest.fail(f"podman cannot run a container here: {probe.stderr.strip()}")
    yield host
    out = host.podman("ps", "-a", "--format", "json", check=False).stdout
    for item in json.loads(out or "[]"):
        node = (item.get("Labels") or {}).get(LABEL_NODE, "")
        if node.startswith(NODE_PREFIX):
            host.remove_node(node)
    shutil.rmtree(home, ignore_errors=True)


class Store(BaseModule):
    """The edge's metamanager stand-in: hands pods to edged, answers its queries, records pod statuses."""

    name = "metamanager"
    group = "meta"

    def __init__(self) -> None:
        super().__init__({})
        self.objects: dict[str, dict[str, Any]] = {}
        self.statuses: dict[str, dict[str, Any]] = {}
        self.ctx: Context | None = None
        self._changed = trio.Event()

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        self.ctx = ctx
        task_status.started()
        async for message in ctx.bus.channel(self.name):
            parts = message.resource.split("/")
            if message.operation == "query":
                if len(parts) == 2:
                    prefix = f"{parts[0]}/{parts[1]}/"
                    content: Any = [o for k, o in self.objects.items() if k.startswith(prefix)]
                    ctx.send_resp(message.reply(content, source=self.name))
                elif message.resource in self.objects:
                    ctx.send_resp(message.reply(self.objects[message.resource], source=self.name))
                else:
                    ctx.send_resp(message.reply(f"{message.resource} not found", operation="error", source=self.name))
            elif len(parts) == 3 and parts[1] == "podstatus" and isinstance(message.content, dict):
                self.statuses[f"{parts[0]}/{parts[2]}"] = message.content.get("Status", message.content)
            self._changed.set()
            self._changed = trio.Event()

    async def put(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        resource = f"{meta.get('namespace', 'default')}/pod/{meta['name']}"
        self.objects[resource] = pod
        assert self.ctx is not None
        await self.ctx.send(
            "edged", Message(source="metamanager", group="resource", operation="insert", resource=resource, content=pod)
        )

    async def wait_status(
        self,
        namespace: str,
        name: str,
        done: Callable[[list[dict[str, Any]]], bool],
        timeout: float = 30.0,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """The pod's last reported status once ``done(containerStatuses)`` holds for it."""
        key = f"{namespace}/{name}"
        with trio.fail_after(timeout):
            while not done(self.statuses.get(key, {}).get("containerStatuses") or []):
                await self._changed.wait()
        return self.statuses[key]

    async def wait_running(self, namespace: str, name: str, timeout: float = 30.0) -> dict[str, Any]:  # noqa: ASYNC109
        def running(statuses: list[dict[str, Any]]) -> bool:
            return bool(statuses) and all("running" in (s.get("state") or {}) for s in statuses)

        return await self.wait_status(namespace, name, running, timeout)


def make_pod(name: str, node: str, containers: list[dict[str, Any]]) -> dict[str, Any]:
    for container in containers:
        container.setdefault("image", IMAGE)
        container.setdefault("imagePullPolicy", "IfNotPresent")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4())},
        "spec": {"nodeName": node, "containers": containers, "terminationGracePeriodSeconds": 0},
    }


def issue_node_cert(cloud_dir: Path, edge_dir: Path, node: str) -> None:
    """What edgehub's bootstrap leaves in <edge>/pki: the cloud CA and a node certificate from it."""
    ca = pki.CA.ensure(cloud_dir / "pki")
    csr, key = pki.make_csr(node)
    cert = pki.sign_csr(ca, csr, node=node)
    pki_dir = edge_dir / "pki"
    pki_dir.mkdir(parents=True, exist_ok=True)
    (pki_dir / "ca.crt").write_bytes(ca.pem)
    pki.write_private(pki_dir / "edge.key", pki.key_pem(key))
    (pki_dir / "edge.crt").write_bytes(pki.cert_pem(cert))


@dataclass
class Node:
    """A kernel the test can stop (and start again)."""

    kernel: Kernel
    done: trio.Event = field(default_factory=trio.Event)

    def module(self, name: str) -> Any:
        return next(m for m in self.kernel.modules if m.name == name)

    async def stop(self) -> None:
        if not self.done.is_set():
            self.kernel.stop()
            await self.done.wait()


async def start_kernel(nursery: trio.Nursery, profile: dict[str, Any], data_dir: Path, extra: list[Any]) -> Node:
    built = build_profile(profile, data_dir=data_dir)
    plugins = Plugins()
    names = list(profile["modules"])
    plugins.load("module", names)
    modules = [*extra, *(plugins.module(n, profile["modules"][n], built) for n in names)]
    node = Node(Kernel(built, plugins, modules))

    async def run(*, task_status: trio.TaskStatus[Any]) -> None:
        try:
            await node.kernel.run(handle_signals=False, task_status=task_status)
        finally:
            node.done.set()

    await nursery.start(run)
    return node


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def joined_edge_modules(hub: Any, cloud_dir: Path, sockets: Path) -> dict[str, dict[str, Any]]:
    """edgehub joining ``hub`` with a fresh token, metamanager, and edged on podman (network none)."""
    return {
        "edgehub": {
            "server": f"127.0.0.1:{hub.port}",
            "httpServer": f"https://127.0.0.1:{hub.https_port}",
            "token": pki.make_token(pki.CA.load(cloud_dir / "pki")),
            "heartbeat": 1,
            "reconnectMin": 0.05,
            "reconnectMax": 0.5,
        },
        "metamanager": {},
        "edged": {
            "podman": {"socket": str(sockets / "podman.sock"), "containersConf": "auto"},
            "podNetwork": "none",
            "relistInterval": 0.2,
            "imageGC": {"intervalSeconds": 0},
            "nodeIP": "127.0.0.1",
        },
    }


async def run_kubectl(
    kubeconfig: str, home: Path, *args: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    """The real kubectl against a test cloud, with a private HOME and discovery cache."""
    with trio.fail_after(90):
        return await trio.run_process(
            [KUBECTL, "--kubeconfig", kubeconfig, "--cache-dir", str(home / "cache"), *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        )


@dataclass
class Cluster:
    cloud: Node
    cloud_dir: Path
    edge_dir: Path
    node_name: str
    store: Store
    make_edge: Callable[[], Any]
    edge: Node | None = None
    kubeconfig: str = ""
    home: str = ""

    @property
    def cloudstream(self) -> Any:
        return self.cloud.module("cloudstream")

    @property
    def edgestream(self) -> Any:
        assert self.edge is not None
        return self.edge.module("edgestream")

    def kubectl_command(self, *args: str) -> list[str]:
        return [KUBECTL, "--kubeconfig", self.kubeconfig, "--cache-dir", str(Path(self.home) / "cache"), *args]

    async def kubectl(
        self,
        *args: str,
        stdin: bytes = b"",
        check: bool = False,
        timeout: float = 30.0,  # noqa: ASYNC109
    ) -> subprocess.CompletedProcess[bytes]:
        with trio.fail_after(timeout):
            return await trio.run_process(
                self.kubectl_command(*args),
                stdin=stdin,
                capture_stdout=True,
                capture_stderr=True,
                check=check,
                env=dict(os.environ, HOME=self.home),
            )

    async def create_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        """The pod in the API (bound to the edge node) and on the edge, running."""
        path = Path(self.home) / f"{pod['metadata']['name']}.json"
        await trio.Path(path).write_text(json.dumps(pod))
        result = await self.kubectl("create", "--validate=false", "-f", str(path))
        assert result.returncode == 0, result.stderr.decode()
        await self.store.put(pod)
        return await self.store.wait_running(pod["metadata"]["namespace"], pod["metadata"]["name"])


@pytest.fixture
def cloudstream_config() -> dict[str, Any]:
    """More settings for the cloud's cloudstream in ``cluster`` (a test module overrides this fixture)."""
    return {}


@pytest.fixture
async def cluster(
    podman_host: PodmanHost, tmp_path: Path, nursery: trio.Nursery, cloudstream_config: dict[str, Any]
) -> AsyncIterator[Cluster]:
    cloud_dir, edge_dir = tmp_path / "cloud", tmp_path / "edge"
    node_name = f"{NODE_PREFIX}{uuid.uuid4().hex[:6]}"
    cloud = await start_kernel(
        nursery,
        {
            "role": "cloud",
            "node": {"name": "cloud"},
            "modules": {
                "apiserver": {"port": 0, "scheduler": False},
                "cloudstream": {
                    "address": "127.0.0.1",
                    "tunnelPort": 0,
                    "streamPort": 0,
                    "pingInterval": 5,
                    **cloudstream_config,
                },
            },
        },
        cloud_dir,
        [],
    )
    await trio.to_thread.run_sync(issue_node_cert, cloud_dir, edge_dir, node_name)
    sockets = Path(tempfile.mkdtemp(prefix="ke-", dir="/tmp"))  # unix socket paths must stay short
    store = Store()

    def edge_profile() -> dict[str, Any]:
        return {
            "role": "edge",
            "node": {"name": node_name},
            "modules": {
                "edged": {
                    "runtime": "podman",
                    "podman": {"socket": str(sockets / "podman.sock"), "startService": True, "containersConf": "auto"},
                    "podNetwork": "none",
                    "relistInterval": 0.2,
                    "imageGC": {"intervalSeconds": 0},
                    "nodeIP": "127.0.0.1",
                    "backoff": {"initialSeconds": 0.2, "maxSeconds": 1},
                },
                "edgestream": {
                    "server": f"127.0.0.1:{cloud.module('cloudstream').tunnel_port}",
                    "backoff": {"initialSeconds": 0.1, "maxSeconds": 0.5},
                },
            },
        }

    home = tmp_path / "home"
    home.mkdir()
    apiserver = cloud.module("apiserver")
    cluster = Cluster(
        cloud,
        cloud_dir,
        edge_dir,
        node_name,
        store,
        lambda: None,
        kubeconfig=str(apiserver.kubeconfig_path),
        home=str(home),
    )

    async def make_edge() -> Node:
        cluster.store = Store() if cluster.edge is not None else store
        cluster.edge = await start_kernel(nursery, edge_profile(), edge_dir, [cluster.store])
        return cluster.edge

    cluster.make_edge = make_edge
    await make_edge()
    with trio.fail_after(15):
        await cluster.cloudstream.tunnels.wait_connected(node_name)
    yield cluster
    if cluster.edge is not None:
        await cluster.edge.stop()
    await cloud.stop()
    await trio.to_thread.run_sync(podman_host.remove_node, node_name)
    shutil.rmtree(sockets, ignore_errors=True)


async def kubectl_in_terminal(
    cluster: Cluster, args: list[str], typed: bytes, *, rows: int, cols: int, env: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """Run kubectl with a real terminal (a pty of ``rows`` x ``cols``) as stdin/stdout/stderr: wait for busybox
    sh's root prompt, type ``typed``, read until kubectl exits; its exit status and everything it showed."""
    import fcntl
    import pty
    import struct
    import termios
    from functools import partial

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    terminal = trio.lowlevel.FdStream(master)
    seen = b""
    async with terminal, trio.open_nursery() as nursery:
        process = await nursery.start(
            partial(
                trio.run_process,
                cluster.kubectl_command(*args),
                stdin=slave,
                stdout=slave,
                stderr=slave,
                check=False,
                env=dict(os.environ, HOME=cluster.home, TERM="xterm", **(env or {})),
            )
        )
        os.close(slave)
        with trio.fail_after(20):
            while b"# " not in seen:  # busybox sh's prompt as root: the shell is up, on a terminal
                seen += await terminal.receive_some()
            await terminal.send_all(typed)
            while process.returncode is None:
                try:
                    chunk = await terminal.receive_some()
                except trio.BrokenResourceError:  # EIO: every writer of the terminal has gone
                    break
                if not chunk:
                    break
                seen += chunk
            await process.wait()
    return process.returncode, seen


async def kubectl_attach_to_a_ticker(cluster: Cluster, env: dict[str, str] | None = None) -> bytes:
    """Start a pod that prints a tick every 0.2 s, `kubectl attach` to it until two ticks have come, and return
    what kubectl printed."""
    from functools import partial

    script = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"
    await cluster.create_pod(make_pod("ticker", cluster.node_name, [{"name": "main", "command": ["sh", "-c", script]}]))
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            partial(
                trio.run_process,
                cluster.kubectl_command("attach", "ticker", "-c", "main"),
                stdout=-1,
                stderr=-1,
                check=False,
                env=dict(os.environ, HOME=cluster.home, **(env or {})),
            )
        )
        seen = b""
        with trio.fail_after(15):
            while seen.count(b"tick") < 2:
                chunk = await process.stdout.receive_some()
                assert chunk, f"kubectl attach ended early: {seen!r}"
                seen += chunk
        process.terminate()
    return seen

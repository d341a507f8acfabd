"""edged tests run real podman: the offline busybox image is built once, each edge node starts its own
podman API service (socket activation, as the profile default does), and every container a test node
created is removed at the end. If podman cannot run here, the tests fail with podman's own words."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from kubeedge import BaseModule, Context, Kernel, Message, Plugins
from kubeedge.plugins.edged.images import BUSYBOX_IMAGE, build_busybox_image
from kubeedge.plugins.edged.podman import CONTAINERS_CONF
from kubeedge.plugins.edged.runtime import LABEL_NODE
from kubeedge.profile import build_profile

SESSION = uuid.uuid4().hex[:6]
NODE_PREFIX = f"edge-t{SESSION}-"


@dataclass
class PodmanHost:
    conf: Path
    env: dict[str, str]

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True, check=check)

    def pods(self, node: str) -> list[dict[str, Any]]:
        out = self.podman("pod", "ps", "--filter", f"label={LABEL_NODE}={node}", "--format", "json").stdout
        return json.loads(out or "[]")

    def remove_node(self, node: str) -> None:
        """Remove every container and pod a test node left (by its label)."""
        pods = [p["Id"] for p in self.pods(node)]
        if pods:  # first: a pod takes its infra and member containers with it
            self.podman("pod", "rm", "-f", "-t", "0", *pods, check=False)
        ids = [c["Id"] for c in self.containers(node)]
        if ids:
            self.podman("rm", "-f", "-t", "0", *ids, check=False)

    def containers(self, node: str, *, infra: bool = True) -> list[dict[str, Any]]:
        out = self.podman("ps", "-a", "--filter", f"label={LABEL_NODE}={node}", "--format", "json").stdout
        found = json.loads(out or "[]")
        return found if infra else [c for c in found if not c.get("IsInfra")]


@pytest.fixture(scope="session")
def podman_host() -> Iterator[PodmanHost]:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (apt-get install podman runc busybox-static): edged needs it")
    home = Path(tempfile.mkdtemp(prefix="ke-podman-"))
    conf = home / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    env = dict(os.environ, CONTAINERS_CONF=str(conf))
    host = PodmanHost(conf, env)
    try:
        build_busybox_image(env=env)
    except OSError as exc:
        pytest.fail(f"cannot build the offline busybox image: {exc}")
    probe = host.podman("run", "--rm", "--network=none", BUSYBOX_IMAGE, "true", check=False)
    if probe.returncode != 0:
        pytest.fail(f"podman cannot run a container here: {probe.stderr.strip()}")
    yield host
    # every pod and container any test node created
    pods = json.loads(host.podman("pod", "ps", "--format", "json", check=False).stdout or "[]")
    doomed = [p["Id"] for p in pods if (p.get("Labels") or {}).get(LABEL_NODE, "").startswith(NODE_PREFIX)]
    if doomed:
        host.podman("pod", "rm", "-f", "-t", "0", *doomed, check=False)
    out = host.podman("ps", "-a", "--format", "json", check=False).stdout
    doomed = [
        c["Id"] for c in json.loads(out or "[]") if (c.get("Labels") or {}).get(LABEL_NODE, "").startswith(NODE_PREFIX)
    ]
    if doomed:
        host.podman("rm", "-f", "-t", "0", *doomed, check=False)
    shutil.rmtree(home, ignore_errors=True)


def socket_dir() -> Path:
    # unix socket paths are limited to 107 bytes: pytest's tmp_path can be longer
    return Path(tempfile.mkdtemp(prefix="ke-", dir="/tmp"))


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path (for unix sockets and podman's runroot), removed afterwards."""
    path = socket_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Store(BaseModule):
    """The test's metamanager: the node's store of pods/configmaps/secrets, answering edged's queries and
    recording what edged reports. It is a real module on the real bus."""

    name = "metamanager"
    group = "meta"

    def __init__(self) -> None:
        super().__init__({})
        self.objects: dict[str, dict[str, Any]] = {}  # "<ns>/<kind>/<name>" -> object
        self.statuses: dict[str, list[dict[str, Any]]] = {}  # "<ns>/<name>" -> every reported status
        self.node: dict[str, Any] | None = None
        self.node_statuses: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.queries: list[str] = []
        self.ctx: Context | None = None
        self._changed = trio.Event()

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        self.ctx = ctx
        task_status.started()
        async for message in ctx.bus.channel(self.name):
            self.handle(message)
            self._changed.set()
            self._changed = trio.Event()

    def handle(self, message: Message) -> None:
        parts = message.resource.split("/")
        if message.operation == "query":
            self.queries.append(message.resource)
            if len(parts) == 2:
                prefix = f"{parts[0]}/{parts[1]}/"
                content: Any = [obj for key, obj in self.objects.items() if key.startswith(prefix)]
                reply = message.reply(content, source=self.name)
            elif message.resource in self.objects:
                reply = message.reply(self.objects[message.resource], source=self.name)
            else:
                reply = message.reply(f"{message.resource} not found", operation="error", source=self.name)
            assert self.ctx is not None
            self.ctx.send_resp(reply)
        elif len(parts) == 3 and parts[1] == "podstatus":
            self.statuses.setdefault(f"{parts[0]}/{parts[2]}", []).append(message.content)
        elif len(parts) == 3 and parts[1] == "node":
            self.node = message.content
        elif len(parts) == 3 and parts[1] == "nodestatus":
            self.node_statuses.append(message.content)
        elif message.operation == "delete" and len(parts) == 3 and parts[1] == "pod":
            self.deleted.append(message.resource)
            self.objects.pop(message.resource, None)

    # -- driving edged -------------------------------------------------------------------------------------

    async def put(self, obj: dict[str, Any], operation: str = "insert") -> None:
        kind = obj.get("kind", "Pod").lower()
        meta = obj["metadata"]
        resource = f"{meta.get('namespace', 'default')}/{kind}/{meta['name']}"
        self.objects[resource] = obj
        assert self.ctx is not None
        await self.ctx.send(
            "edged",
            Message(source="metamanager", group="resource", operation=operation, resource=resource, content=obj),
        )

    async def delete(self, obj: dict[str, Any]) -> None:
        kind = obj.get("kind", "Pod").lower()
        meta = obj["metadata"]
        resource = f"{meta.get('namespace', 'default')}/{kind}/{meta['name']}"
        self.objects.pop(resource, None)
        assert self.ctx is not None
        await self.ctx.send(
            "edged", Message(source="metamanager", group="resource", operation="delete", resource=resource, content=obj)
        )

    def status(self, key: str) -> dict[str, Any]:
        return self.statuses.get(key, [{}])[-1].get("Status", {})

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 20.0) -> Any:  # noqa: ASYNC109
        with trio.fail_after(timeout):
            while True:
                value = predicate()
                if value:
                    return value
                await self._changed.wait()

    async def wait_status(self, key: str, predicate: Callable[[dict[str, Any]], Any], timeout: float = 20.0) -> Any:  # noqa: ASYNC109
        await self.wait_for(lambda: key in self.statuses and predicate(self.status(key)), timeout)
        return self.status(key)


def edged_config(sockets: Path, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "runtime": "podman",
        "podman": {"socket": str(sockets / "podman.sock"), "startService": True, "containersConf": "auto"},
        "podNetwork": "none",
        "podStatusInterval": 10,
        "nodeStatusInterval": 10,
        "relistInterval": 0.2,
        "backoff": {"initialSeconds": 0.5, "maxSeconds": 2},
        "imageGC": {"intervalSeconds": 0},
        "nodeIP": "127.0.0.1",
    }
    config.update(extra)
    return config


@dataclass
class Edge:
    """One edge node (kernel + Store + edged) the test can stop and start again on the same data dir."""

    name: str
    data_dir: Path
    config: dict[str, Any]
    store: Store = field(default_factory=Store)
    kernel: Kernel | None = None
    _done: trio.Event | None = None

    async def start(self, nursery: trio.Nursery, store: Store | None = None) -> Store:
        if store is not None:
            self.store = store
        profile = build_profile(
            {"role": "edge", "node": {"name": self.name, "labels": {"site": "lab"}}, "modules": {"edged": self.config}},
            data_dir=self.data_dir,
        )
        plugins = Plugins()
        plugins.load("module", ["edged"])
        edged = plugins.module("edged", self.config, profile)
        self.kernel = Kernel(profile, plugins, [self.store, edged])
        done = self._done = trio.Event()

        async def run(*, task_status: trio.TaskStatus[Any]) -> None:
            try:
                assert self.kernel is not None
                await self.kernel.run(handle_signals=False, task_status=task_status)
            finally:
                done.set()

        await nursery.start(run)
        return self.store

    @property
    def edged(self) -> Any:
        assert self.kernel is not None
        return next(m for m in self.kernel.modules if m.name == "edged")

    async def stop(self) -> None:
        if self.kernel is not None and self._done is not None:
            self.kernel.stop()
            await self._done.wait()
            self.kernel = None


EdgeFactory = Callable[..., Awaitable[Edge]]


@pytest.fixture
async def edge_factory(podman_host: PodmanHost, tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[EdgeFactory]:
    """Start edge nodes with edged settings overridden; all are stopped and their containers removed after."""
    made: list[tuple[Edge, Path]] = []

    async def make(**overrides: Any) -> Edge:
        sockets = socket_dir()
        name = f"{NODE_PREFIX}{uuid.uuid4().hex[:6]}"
        node = Edge(name, tmp_path / name, edged_config(sockets, **overrides))
        made.append((node, sockets))
        await node.start(nursery)
        return node

    yield make
    for node, sockets in made:
        await node.stop()
        await trio.to_thread.run_sync(podman_host.remove_node, node.name)
        shutil.rmtree(sockets, ignore_errors=True)


@pytest.fixture
async def edge(edge_factory: EdgeFactory) -> Edge:
    return await edge_factory()


def make_pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    spec.setdefault("terminationGracePeriodSeconds", 0)
    for container in [*containers, *spec.get("initContainers", [])]:
        container.setdefault("image", BUSYBOX_IMAGE)
        container.setdefault("imagePullPolicy", "IfNotPresent")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4())},
        "spec": {"containers": containers, **spec},
    }

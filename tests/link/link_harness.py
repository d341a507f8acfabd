"""Shared set-up for the link tests: in-process cloud and edge kernels, raw mTLS clients, waiting helpers.

Imported (as ``link_harness``) by the tests of tests/cloudhub, tests/edgehub, tests/metamanager and tests/link.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio
from cryptography.hazmat.primitives import serialization

from kubeedge import BaseModule, Context, Kernel, Message, Plugins
from kubeedge.plugins.cloudhub.hub import CloudHub
from kubeedge.plugins.common import pki
from kubeedge.plugins.edgehub.hub import EdgeHub
from kubeedge.plugins.metamanager.manager import MetaManager
from kubeedge.profile import build_profile

FAST_CLOUD = {"address": "127.0.0.1", "port": 0, "httpsPort": 0, "retryInterval": 0.5, "keepaliveInterval": 5}
FAST_EDGE = {"heartbeat": 1, "reconnectMin": 0.05, "reconnectMax": 0.5, "connectTimeout": 3}


class Recorder(BaseModule):
    """Stands in for a module (edgecontroller, edged...): keeps what it receives, answers nothing."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.group = name
        super().__init__({})
        self.messages: list[Message] = []
        self.changed = trio.Event()

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for message in ctx.bus.channel(self.name):
            self.messages.append(message)
            self.changed.set()
            self.changed = trio.Event()

    async def wait_for(self, predicate: Callable[[Message], bool], timeout: float = 10) -> Message:  # noqa: ASYNC109
        with trio.fail_after(timeout):
            while True:
                for message in self.messages:
                    if predicate(message):
                        return message
                await self.changed.wait()


async def until(predicate: Callable[[], bool], event: Callable[[], trio.Event], timeout: float = 10) -> None:  # noqa: ASYNC109
    """Wait until ``predicate()`` holds, re-checking whenever the event ``event()`` returns fires."""
    with trio.fail_after(timeout):
        while not predicate():
            with trio.move_on_after(0.2):  # a safety net for changes that fire no event
                await event().wait()


@dataclass
class Node:
    kernel: Kernel
    recorders: dict[str, Recorder] = field(default_factory=dict)

    @property
    def bus(self) -> Any:
        return self.kernel.bus

    @property
    def ctx(self) -> Context:
        return self.kernel.ctx


@dataclass
class Cloud(Node):
    hub: CloudHub = None

    @property
    def ca(self) -> pki.CA:
        assert self.hub.ca is not None
        return self.hub.ca

    def token(self, **kwargs: Any) -> str:
        return pki.make_token(self.ca, **kwargs)

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.hub.port}"

    @property
    def http_server(self) -> str:
        return f"https://127.0.0.1:{self.hub.https_port}"

    async def feed(
        self, node: str, key: str, version: int | str, content: Any = None, operation: str = "update"
    ) -> None:
        """What a controller does: send cloudhub a resource message for ``node``."""
        ns, kind, name = key.split("/", 2)
        obj = (
            content
            if content is not None
            else {
                "apiVersion": "v1",
                "kind": kind.capitalize(),
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "uid": f"uid-{ns}-{kind}-{name}",
                    "resourceVersion": str(version),
                },
                "data": {"v": str(version)},
            }
        )
        await self.bus.send(
            "cloudhub",
            Message(
                source="edgecontroller",
                group="resource",
                operation=operation,
                resource=f"node/{node}/{key}",
                resource_version=str(version),
                content=obj,
            ),
        )

    async def wait_acked(self, count: int, timeout: float = 15) -> None:  # noqa: ASYNC109
        await until(lambda: self.hub.acked >= count, lambda: self.hub.ack_event, timeout)

    def record_versions(self, node: str) -> dict[str, str]:
        assert self.hub.records is not None
        return {r.resource: r.resource_version for r in self.hub.records.list(node)}


@dataclass
class Edge(Node):
    hub: EdgeHub = None
    meta: MetaManager = None

    async def stored(self) -> dict[str, tuple[str, Any]]:
        """Every live row of the metamanager store: key -> (resourceVersion, object)."""
        model = self.meta.model

        def read() -> dict[str, tuple[str, Any]]:
            return {
                row.key: (row.resource_version, json.loads(row.value))
                for row in model.select().where(model.deleted == False)  # noqa: E712
            }

        return await self.ctx.database().run(read)

    async def wait_connected(self, timeout: float = 10) -> None:  # noqa: ASYNC109
        with trio.fail_after(timeout):
            await self.hub.connected.wait()


def _profile(role: str, name: str, data_dir: Path, modules: list[Any]) -> Any:
    return build_profile({"role": role, "node": {"name": name}, "modules": {}}, data_dir=data_dir)


@asynccontextmanager
async def run_cloud(
    data_dir: Path, recorders: tuple[str, ...] = ("edgecontroller",), **config: Any
) -> AsyncIterator[Cloud]:
    hub = CloudHub({**FAST_CLOUD, **config})
    recs = {name: Recorder(name) for name in recorders}
    profile = _profile("cloud", "cloud", data_dir, [])
    kernel = Kernel(profile, Plugins(), [hub, *recs.values()])
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(kernel.run, handle_signals=False))
        try:
            yield Cloud(kernel, recs, hub)
        finally:
            kernel.stop()


@asynccontextmanager
async def run_edge(
    data_dir: Path,
    name: str,
    cloud: Cloud | None = None,
    *,
    token: str | None = None,
    server: str = "",
    http_server: str = "",
    recorders: tuple[str, ...] = ("edged",),
    **config: Any,
) -> AsyncIterator[Edge]:
    cfg = {**FAST_EDGE, **config}
    if cloud is not None:
        cfg.setdefault("server", cloud.server)
        cfg.setdefault("httpServer", cloud.http_server)
        if token is None and not (data_dir / "pki" / "edge.crt").exists():
            token = cloud.token()
    if server:
        cfg["server"] = server
    if http_server:
        cfg["httpServer"] = http_server
    if token:
        cfg["token"] = token
    hub = EdgeHub(cfg)
    meta = MetaManager({"metaSyncInterval": 3600})
    recs = {n: Recorder(n) for n in recorders}
    profile = _profile("edge", name, data_dir, [])
    kernel = Kernel(profile, Plugins(), [meta, hub, *recs.values()])
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(kernel.run, handle_signals=False))
        try:
            yield Edge(kernel, recs, hub, meta)
        finally:
            kernel.stop()


# -- raw clients ------------------------------------------------------------------------------------------


def node_credentials(ca: pki.CA, node: str, directory: Path, *, cn_node: str | None = None) -> ssl.SSLContext:
    """A client TLS context holding a certificate for ``cn_node`` (default ``node``) signed by ``ca``."""
    directory.mkdir(parents=True, exist_ok=True)
    csr, key = pki.make_csr(cn_node or node)
    cert = pki.sign_csr(ca, csr)
    (directory / "c.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "c.key").write_bytes(pki.key_pem(key))
    return client_context(ca, directory / "c.crt", directory / "c.key")


def client_context(ca: pki.CA, crt: Path | None, key: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca.der)
    if crt is not None and key is not None:
        ctx.load_cert_chain(str(crt), str(key))
    return ctx


@asynccontextmanager
async def raw_client(
    cloud: Cloud,
    node: str,
    ctx: ssl.SSLContext,
    *,
    path: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    max_message_size: int = 16 * 1024 * 1024,
    connect_timeout: float = 5,
) -> AsyncIterator[Any]:
    from trio_websocket import open_websocket

    resource = path or f"/{cloud.hub.project_id}/{node}/events"
    hdrs = (
        headers
        if headers is not None
        else [(b"node_id", node.encode()), (b"project_id", cloud.hub.project_id.encode())]
    )
    async with open_websocket(
        "127.0.0.1",
        cloud.hub.port,
        resource,
        use_ssl=ctx,
        extra_headers=hdrs,
        connect_timeout=connect_timeout,
        disconnect_timeout=2,
        max_message_size=max_message_size,
    ) as ws:
        yield ws


async def next_message(ws: Any, timeout: float = 10) -> Message:  # noqa: ASYNC109
    with trio.fail_after(timeout):
        return Message.from_json(await ws.get_message())


def ack(message: Message) -> str:
    return (
        Message(
            source="metamanager",
            group="resource",
            operation="response",
            parent_msg_id=message.msg_id,
            resource=message.resource,
            content="OK",
        ).to_json()
        + "\n"
    )

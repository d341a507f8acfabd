"""The ``edgestream`` module: the edge end of cloudstream's tunnel (``kubectl logs/exec/attach``, node stats).

It dials ``wss://<server>/v1/kubeedge/connect`` (cloudstream's ``tunnelPort``, 10004) with the node's
certificate from ``pki`` (default ``<data-dir>/pki``, where edgehub's bootstrap stores ``ca.crt``,
``edge.crt``, ``edge.key``), keeps it up with backoff, and serves the connections the cloud multiplexes on it
against the containers edged runs. The container runtime is edged's: the class the
``kubeedge_container_runtime`` hook names for ``modules.edged.runtime`` (default ``podman``), built with
edged's section for it, attached to the API service edged started rather than starting another.
Stats connections get kubelet's ``/stats/summary`` and ``/metrics/resource`` for this node (``stats.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from kubeedge import BaseModule, Context, hookimpl

__all__ = ["EdgeStream"]

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "server": {"type": "string", "description": "cloudstream's tunnel, host:port (default 127.0.0.1:10004)"},
        "pki": {"type": "string", "description": "directory with ca.crt, edge.crt, edge.key (default <data-dir>/pki)"},
        "internalIP": {"type": "string", "description": "sent as SessionInternalIP (default edged's nodeIP)"},
        "runtime": {"type": "string", "description": "container runtime name (default edged's, else podman)"},
        "handshakeTimeout": {"type": "number", "exclusiveMinimum": 0},
        "backoff": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "initialSeconds": {"type": "number", "exclusiveMinimum": 0},
                "maxSeconds": {"type": "number", "exclusiveMinimum": 0},
            },
        },
    },
}


class EdgeStream(BaseModule):
    name = "edgestream"
    group = "edgestream"
    after = ("edged", "websocket", "edgehub")

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        c = self.config
        self.server: str = str(c.get("server", "127.0.0.1:10004"))
        self.pki_dir = Path(c["pki"]) if c.get("pki") else Path()
        self.internal_ip: str = str(c.get("internalIP", ""))
        self.handshake_timeout = float(c.get("handshakeTimeout", 10.0))
        backoff = c.get("backoff") or {}
        self.backoff_initial = float(backoff.get("initialSeconds", 0.5))
        self.backoff_max = float(backoff.get("maxSeconds", 30.0))
        self.connected = False
        self._changed = trio.Event()
        self.runtime: Any = None
        self.runtime_ready = trio.Event()

    def _set_connected(self, value: bool) -> None:
        if value != self.connected:
            self.connected = value
            self._changed.set()
            self._changed = trio.Event()

    async def wait_connected(self, value: bool = True) -> None:
        while self.connected != value:
            await self._changed.wait()

    def make_runtime(self, ctx: Context) -> Any:
        """edged's runtime class, attached to the service edged runs (never starting a second one)."""
        import importlib

        edged = dict(ctx.profile.modules.get("edged") or {})
        wanted = str(self.config.get("runtime") or edged.get("runtime") or "podman")
        runtimes = ctx.plugins.container_runtimes()
        if wanted not in runtimes:
            known = ", ".join(sorted(runtimes)) or "none"
            raise ValueError(f"edgestream: container runtime {wanted!r} is not provided by any loaded plugin ({known})")
        cls = runtimes[wanted]
        if isinstance(cls, str):
            module_name, _, attribute = cls.partition(":")
            cls = getattr(importlib.import_module(module_name), attribute)
        section = dict(edged.get(wanted) or {})
        data_dir = ctx.data_dir / "edged"
        probe = cls(section, data_dir=data_dir, node_name=ctx.node_name)
        if getattr(probe, "start_service", False) and getattr(probe, "socket_path", None):
            section = {**section, "startService": False, "socket": str(probe.socket_path)}
            return cls(section, data_dir=data_dir, node_name=ctx.node_name)
        return probe

    async def _run_runtime(self, ctx: Context) -> None:
        delay = self.backoff_initial
        while True:
            if self.runtime_ready.is_set():
                self.runtime_ready = trio.Event()
            try:
                runtime = self.make_runtime(ctx)
                self.runtime = runtime
                await runtime.run(task_status=_Started(self.runtime_ready))
            except Exception as exc:
                import logging

                logging.getLogger("kubeedge.edgestream").warning(
                    "edgestream: node %s: container runtime unavailable (retrying): %s", ctx.node_name, exc
                )
            await trio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        from .client import TunnelClient
        from .containers import Containers
        from .stats import StatsCollector

        if self.pki_dir == Path():
            self.pki_dir = ctx.data_dir / "pki"
        if not self.internal_ip:
            self.internal_ip = str((ctx.profile.modules.get("edged") or {}).get("nodeIP") or "127.0.0.1")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._run_runtime, ctx)
            runtime = _LazyRuntime(self)
            stats = StatsCollector(runtime, ctx.node_name, ctx.data_dir)
            client = TunnelClient(self, ctx.node_name, Containers(runtime, ctx.node_name), stats)
            nursery.start_soon(client.run)
            task_status.started()


class _Started:
    """A task_status for the runtime's run(): sets an event when it is ready."""

    def __init__(self, event: trio.Event) -> None:
        self.event = event

    def started(self, value: Any = None) -> None:
        self.event.set()


class _LazyRuntime:
    """The runtime, once it is up: a request waits for it a little, then fails with a clear reason."""

    def __init__(self, module: EdgeStream) -> None:
        self.module = module

    def __getattr__(self, name: str) -> Any:
        runtime = self.module.runtime
        if runtime is None or not self.module.runtime_ready.is_set():
            if name in ("socket_path", "name"):
                return getattr(runtime, name, None)
            raise AttributeError(name)
        return getattr(runtime, name)

    async def list_containers(self, labels: dict[str, str]) -> Any:
        with trio.move_on_after(10):
            await self.module.runtime_ready.wait()
        if not self.module.runtime_ready.is_set():
            from .containers import ContainerNotFound

            raise ContainerNotFound("the node's container runtime is not reachable", code=503)
        return await self.module.runtime.list_containers(labels)


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    return CONFIG_SCHEMA


@hookimpl
def kubeedge_module(config: dict[str, Any]) -> EdgeStream:
    return EdgeStream(config)

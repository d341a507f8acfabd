"""The edge end of the stream tunnel: dial the cloud, keep the tunnel up, serve each multiplexed connection.

The tunnel is ``wss://<server>/v1/kubeedge/connect`` with the node certificate edgehub stored
(``<pki>/edge.crt``, ``edge.key``, trusting ``<pki>/ca.crt``) and the headers ``SessionHostNameOverride``
(the node) and ``SessionInternalIP``. It is redialled with exponential backoff; when it drops, every
connection on it is cancelled (their clients on the cloud side see the node go offline).
"""

from __future__ import annotations

import json
import logging
import random
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from kubeedge.plugins.common.stream_protocol import (
    ATTACH,
    CHANNEL_STDOUT,
    CLOSE,
    CONNECT_PATH,
    DATA,
    EXEC,
    INTERNAL_IP_HEADER,
    LOGS,
    METRIC,
    NODE_HEADER,
    REMOVE,
    ExecRequest,
    Frame,
    FrameError,
    LogsRequest,
    MetricsRequest,
    decode_frame,
    encode_frame,
)

from .containers import ContainerNotFound, Containers
from .stats import StatsCollector, StatsError

if TYPE_CHECKING:
    from . import EdgeStream

log = logging.getLogger("kubeedge.edgestream")

INBOUND_BUFFER = 64
FRAME_BYTES = 256 * 1024


class TunnelClient:
    def __init__(
        self, module: EdgeStream, node: str, containers: Containers, stats: StatsCollector | None = None
    ) -> None:
        self.module = module
        self.node = node
        self.containers = containers
        self.stats = stats
        self.handlers: dict[int, tuple[trio.CancelScope, trio.MemorySendChannel[bytes]]] = {}
        self.ws: Any = None
        self.outbox: trio.MemorySendChannel[bytes] | None = None

    def ssl_context(self) -> ssl.SSLContext:
        pki_dir = self.module.pki_dir
        ctx = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
        ctx.load_cert_chain(str(pki_dir / "edge.crt"), str(pki_dir / "edge.key"))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    async def run(self) -> None:
        """Dial, serve, and dial again after a backoff, forever."""
        from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

        module = self.module
        delay = module.backoff_initial
        url = f"wss://{module.server}{CONNECT_PATH}"
        headers = [
            (NODE_HEADER.encode(), self.node.encode()),
            (INTERNAL_IP_HEADER.encode(), module.internal_ip.encode()),
        ]
        while True:
            missing = [f for f in ("ca.crt", "edge.crt", "edge.key") if not (module.pki_dir / f).exists()]
            if missing:
                log.info(
                    "edgestream: node %s has no %s in %s yet (edgehub writes them)",
                    self.node,
                    missing[0],
                    module.pki_dir,
                )
            else:
                try:
                    ctx = await trio.to_thread.run_sync(self.ssl_context)
                    async with open_websocket_url(
                        url,
                        ssl_context=ctx,
                        extra_headers=headers,
                        connect_timeout=module.handshake_timeout,
                        disconnect_timeout=2,
                        max_message_size=4 * 1024 * 1024,
                    ) as ws:
                        delay = module.backoff_initial
                        log.info("edgestream: node %s tunnel up to %s", self.node, url)
                        await self.serve(ws)
                except (OSError, ssl.SSLError, HandshakeError, ConnectionClosed, trio.BrokenResourceError) as exc:
                    log.warning("edgestream: node %s tunnel to %s: %r", self.node, url, exc)
                finally:
                    self.ws = self.outbox = None
                    module._set_connected(False)
            await trio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, module.backoff_max)

    async def serve(self, ws: Any) -> None:
        from trio_websocket import ConnectionClosed

        self.ws = ws
        # one writer owns the websocket (a send cancelled halfway would break the TLS stream for all)
        outbox, outbox_out = trio.open_memory_channel[bytes](64)
        self.outbox = outbox
        self.module._set_connected(True)

        async def write_loop() -> None:
            try:
                async for message in outbox_out:
                    await ws.send_message(message)
            except ConnectionClosed:
                pass
            finally:
                outbox.close()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(write_loop)
                while True:
                    try:
                        message = await ws.get_message()
                    except ConnectionClosed as exc:
                        log.info("edgestream: node %s tunnel closed: %s", self.node, exc.reason)
                        break
                    if isinstance(message, str):
                        continue
                    try:
                        frame = decode_frame(message)
                    except FrameError as exc:
                        log.warning("edgestream: node %s: bad frame from the cloud dropped: %s", self.node, exc)
                        continue
                    await self.dispatch(frame, nursery)
                nursery.cancel_scope.cancel()
        finally:
            for scope, _ in self.handlers.values():
                scope.cancel()
            self.handlers.clear()

    async def dispatch(self, frame: Frame, nursery: trio.Nursery) -> None:
        handler = self.handlers.get(frame.connect_id)
        if frame.type in (LOGS, EXEC, ATTACH, METRIC) and handler is None:
            send, receive = trio.open_memory_channel[bytes](INBOUND_BUFFER)
            scope = trio.CancelScope()
            self.handlers[frame.connect_id] = (scope, send)
            nursery.start_soon(self.handle, frame, scope, receive)
        elif handler is None:
            return  # a connection already over
        elif frame.type == DATA:
            try:
                await handler[1].send(frame.data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        elif frame.type in (REMOVE, CLOSE):
            handler[0].cancel()

    async def send(self, connect_id: int, type_: int, data: bytes = b"") -> None:
        if self.ws is None or self.outbox is None:
            raise trio.BrokenResourceError("the tunnel is down")
        try:
            await self.outbox.send(encode_frame(connect_id, type_, data))
        except trio.ClosedResourceError as exc:
            raise trio.BrokenResourceError("the tunnel closed") from exc

    async def handle(self, frame: Frame, scope: trio.CancelScope, inbound: trio.MemoryReceiveChannel[bytes]) -> None:
        cid = frame.connect_id
        replied = False

        async def output(channel: int, data: bytes) -> None:
            for offset in range(0, len(data), FRAME_BYTES):
                await self.send(cid, DATA, bytes([channel]) + data[offset : offset + FRAME_BYTES])

        try:
            with scope:
                try:
                    if frame.type == METRIC:
                        if self.stats is None:
                            raise ContainerNotFound("stats are not served by this edge", code=501)
                        content_type, body = await self.stats.serve(MetricsRequest.decode(frame.json()))
                        reply = {"ok": True, "contentType": content_type}
                        await self.send(cid, METRIC, json.dumps(reply).encode())
                        replied = True
                        await output(CHANNEL_STDOUT, body)
                        await self.send(cid, CLOSE, b"{}")
                    elif frame.type == LOGS:
                        logs = LogsRequest.decode(frame.json())
                        found = await self.containers.find(
                            logs.namespace, logs.pod, logs.container, previous=logs.previous
                        )
                        await self.send(cid, frame.type, b'{"ok": true}')
                        replied = True
                        await self.containers.logs(logs, found.id, output)
                        await self.send(cid, CLOSE, b"{}")
                    else:
                        request = ExecRequest.decode(frame.json())
                        found = await self.containers.find(request.namespace, request.pod, request.container)
                        if found.state != "running":
                            raise ContainerNotFound(
                                f'container "{request.container}" in pod "{request.pod}" is not running', code=400
                            )
                        await self.send(cid, frame.type, b'{"ok": true}')
                        replied = True
                        if frame.type == EXEC:
                            code = await self.containers.exec(request, found.id, inbound, output)
                        else:
                            code = await self.containers.attach(request, found.id, inbound, output)
                        await self.send(cid, CLOSE, json.dumps({"exitCode": code}).encode())
                except (ContainerNotFound, StatsError, FrameError) as exc:
                    status = exc.code if isinstance(exc, ContainerNotFound | StatsError) else 400
                    await self._fail(cid, frame.type, replied, status, str(exc))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    raise
                except Exception as exc:
                    log.exception("edgestream: node %s: connection %d failed", self.node, cid)
                    await self._fail(cid, frame.type, replied, 500, f"{type(exc).__name__}: {exc}")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("edgestream: node %s: connection %d lost with the tunnel", self.node, cid)
        finally:
            self.handlers.pop(cid, None)

    async def _fail(self, cid: int, type_: int, replied: bool, code: int, message: str) -> None:
        if replied:
            await self.send(cid, CLOSE, json.dumps({"error": message}).encode())
        else:
            body = {"ok": False, "code": code, "message": message}
            await self.send(cid, type_, json.dumps(body).encode())
            await self.send(cid, CLOSE, b"{}")


def default_pki(data_dir: Path) -> Path:
    return data_dir / "pki"

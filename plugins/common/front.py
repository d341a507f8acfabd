"""Serve an ASGI app with hypercorn, but let a callback take raw connections whose request asks for an upgrade
ASGI cannot express (``Upgrade: SPDY/3.1``).

Hypercorn hands an app websockets and plain HTTP only; kubelet's exec/attach over SPDY needs the raw
connection after a ``101 Switching Protocols``. :func:`serve` runs hypercorn's own per-connection server
(``hypercorn.trio.tcp_server.TCPServer``) on listeners we accept from, with the TLS settings hypercorn would
use (``config.create_ssl_context()``: the same certificate, client-CA requirement and ALPN). For each
connection it finishes the TLS handshake, and on HTTP/1.1 reads the request head: when ``wants(head)`` is
true the connection goes to ``upgrade(head, stream)``, otherwise to hypercorn in the same process, the head
given back to it first, so nothing is copied through another socket. An h2 connection goes straight to
hypercorn (SPDY upgrades are HTTP/1.1 only).

This leans on hypercorn's internal classes (checked with hypercorn 0.18): ``TCPServer``, ``Lifespan`` and
``WorkerContext``, used the way ``hypercorn.trio.run.worker_serve`` uses them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote

import trio

__all__ = ["HEAD_LIMIT", "PrefixedStream", "RequestHead", "http_error", "read_head", "serve", "spdy_upgrade"]

log = logging.getLogger("kubeedge.front")

HEAD_LIMIT = 65536
HEAD_TIMEOUT = 30.0


@dataclass
class RequestHead:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def path(self) -> str:
        return unquote(self.target.split("?", 1)[0])

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    def get(self, name: str, default: str = "") -> str:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), default)

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, comma-separated lists split, as Go's Header.Values sees repeated lines."""
        name = name.lower()
        return [p.strip() for k, v in self.headers if k.lower() == name for p in v.split(",") if p.strip()]

    @classmethod
    def parse(cls, raw: bytes) -> RequestHead | None:
        try:
            lines = raw.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            return None
        headers = []
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                return None
            headers.append((name.strip(), value.strip()))
        return cls(method, target, version, headers)


def http_error(code: int, status: dict[str, Any]) -> bytes:
    """A whole HTTP/1.1 error response carrying a ``Status``, for a connection taken from hypercorn (it closes
    after it)."""
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "Error"
    body = json.dumps(status).encode()
    head = (
        f"HTTP/1.1 {code} {phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def spdy_upgrade(head: RequestHead) -> bool:
    """Whether the request asks for ``Upgrade: SPDY/3.1`` (with ``Connection: Upgrade``)."""
    upgrades = [u.lower() for u in head.get_all("upgrade")]
    connection = [c.lower() for c in head.get_all("connection")]
    return "spdy/3.1" in upgrades and "upgrade" in connection


class PrefixedStream(trio.abc.Stream):
    """A stream whose first bytes were already read: they are given back before the rest. Attributes it lacks
    (``selected_alpn_protocol``, ``transport_stream``, ``getpeercert``...) come from the wrapped stream."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self.stream = stream
        self.prefix = prefix

    async def do_handshake(self) -> None:
        """Done already (hypercorn asks again)."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.prefix:
            if max_bytes is None or max_bytes >= len(self.prefix):
                data, self.prefix = self.prefix, b""
            else:
                data, self.prefix = self.prefix[:max_bytes], self.prefix[max_bytes:]
            await trio.lowlevel.checkpoint()
            return data
        return bytes(await self.stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.stream.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


async def read_head(
    stream: trio.abc.Stream, limit: int = HEAD_LIMIT, buffer: bytearray | None = None
) -> tuple[bytes, bytes] | None:
    """(the request head up to its blank line, the bytes after it); None when the peer ends before a head.
    What was read is also in ``buffer`` (when given), for a caller that gives up waiting."""
    buffer = bytearray() if buffer is None else buffer
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            return bytes(buffer[: end + 4]), bytes(buffer[end + 4 :])
        if len(buffer) > limit:
            return bytes(buffer), b""  # not ours to judge: hypercorn answers an oversized head
        data = await stream.receive_some(65536)
        if not data:
            return None
        buffer += data


Upgrade = Callable[[RequestHead, trio.abc.Stream], Awaitable[None]]


async def serve(
    app: Any,
    config: Any,
    *,
    upgrade: Upgrade,
    wants: Callable[[RequestHead], bool] = spdy_upgrade,
    shutdown_trigger: Callable[[], Awaitable[Any]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Like ``hypercorn.trio.serve(app, config, shutdown_trigger=...)`` (started value: the bound URLs)."""
    from hypercorn.trio.lifespan import Lifespan
    from hypercorn.trio.statsd import StatsdLogger
    from hypercorn.trio.tcp_server import TCPServer
    from hypercorn.trio.worker_context import WorkerContext
    from hypercorn.typing import ConnectionState
    from hypercorn.utils import repr_socket_addr, wrap_app

    app = wrap_app(app, config.wsgi_max_body_size, "asgi")
    config.set_statsd_logger_class(StatsdLogger)
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(app, config, lifespan_state)
    context = WorkerContext(None)

    async def handle(stream: trio.abc.Stream) -> None:
        head: RequestHead | None = None
        prefix = b""
        try:
            if isinstance(stream, trio.SSLStream):
                try:
                    with trio.fail_after(config.ssl_handshake_timeout):
                        await stream.do_handshake()
                except (trio.BrokenResourceError, trio.TooSlowError):
                    with trio.move_on_after(1):
                        await stream.aclose()
                    return
            if not isinstance(stream, trio.SSLStream) or stream.selected_alpn_protocol() != "h2":
                partial_head = bytearray()
                got: tuple[bytes, bytes] | None = None
                with trio.move_on_after(HEAD_TIMEOUT) as waited:
                    got = await read_head(stream, buffer=partial_head)
                if waited.cancelled_caught:  # no whole head in time: hypercorn deals with the connection
                    got = (b"", bytes(partial_head))
                if got is None:
                    await stream.aclose()
                    return
                raw, rest = got
                head = RequestHead.parse(raw) if raw else None
                if head is not None and wants(head):
                    prefix = rest
                else:
                    head, prefix = None, raw + rest
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()
            return
        inner = PrefixedStream(stream, prefix)
        if head is None:
            await TCPServer(app, config, context, ConnectionState(lifespan_state.copy()), cast(Any, inner))
            return
        try:
            await upgrade(head, inner)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("upgraded connection %s %s ended: %r", head.method, head.path, exc)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            sockets = config.create_sockets()
            listeners: list[trio.abc.Listener[Any]] = []
            binds = []
            ssl_context = config.create_ssl_context()
            for sock in sockets.secure_sockets:
                sock.listen(config.backlog)
                listeners.append(
                    trio.SSLListener(
                        trio.SocketListener(trio.socket.from_stdlib_socket(sock)), ssl_context, https_compatible=True
                    )
                )
                binds.append(f"https://{repr_socket_addr(sock.family, sock.getsockname())}")
            for sock in sockets.insecure_sockets:
                sock.listen(config.backlog)
                listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
                binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            async with trio.open_nursery() as accept_nursery:
                accept_nursery.start_soon(
                    partial(trio.serve_listeners, handle, listeners, handler_nursery=server_nursery)
                )
                task_status.started(binds)
                await shutdown_trigger()
                accept_nursery.cancel_scope.cancel()
            await context.terminated.set()
            server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()

"""The cloud end of the stream tunnel: one mTLS websocket per edge node, many connections multiplexed on it.

An edge dials ``wss://<cloud>:<tunnelPort>/v1/kubeedge/connect`` with its node certificate; the node is the
certificate's ``CN=system:node:<node>`` (a ``SessionHostNameOverride`` header naming another node is
refused). :class:`TunnelSession` hands out connection ids and routes the edge's frames to the
:class:`TunnelStream` each id belongs to; a newer tunnel from the same node replaces the older one.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import trio

from kubeedge.plugins.common import pki
from kubeedge.plugins.common.stream_protocol import (
    CLOSE,
    CONNECT_PATH,
    DATA,
    INTERNAL_IP_HEADER,
    NODE_HEADER,
    REMOVE,
    Frame,
    FrameError,
    decode_frame,
    encode_frame,
)

__all__ = ["NodeOffline", "TunnelServer", "TunnelSession", "TunnelStream"]

log = logging.getLogger("kubeedge.cloudstream")

STREAM_BUFFER = 64  # frames a connection may have queued before the tunnel's reader waits for it
OUTBOX = 64  # frames queued for the tunnel's writer


class NodeOffline(Exception):
    """No tunnel from the node: the text names it."""


class TunnelStream:
    """One multiplexed connection (a logs, exec or attach request) on a node's tunnel."""

    def __init__(self, session: TunnelSession, connect_id: int) -> None:
        self.session = session
        self.id = connect_id
        self._send, self._receive = trio.open_memory_channel[Frame](STREAM_BUFFER)
        self.ended = False

    async def receive(self) -> Frame | None:
        """The edge's next frame for this connection; None once the tunnel is gone."""
        try:
            frame = await self._receive.receive()
        except trio.EndOfChannel:
            return None
        if frame.type == CLOSE:
            self.ended = True
        return frame

    async def send(self, type_: int, data: bytes = b"") -> None:
        await self.session.send(encode_frame(self.id, type_, data))

    async def send_data(self, data: bytes) -> None:
        await self.send(DATA, data)

    async def aclose(self) -> None:
        """Forget the connection; tell the edge to stop it unless the edge ended it."""
        self.session.streams.pop(self.id, None)
        self._send.close()
        if not self.ended and not self.session.closed.is_set():
            self.ended = True
            with trio.move_on_after(2, shield=True):
                try:
                    await self.send(REMOVE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
                except Exception as exc:  # the websocket closed under us: nothing to tell
                    log.debug("node %s: remove %d not sent: %r", self.session.node, self.id, exc)


class TunnelSession:
    def __init__(self, node: str, internal_ip: str, ws: Any, remote: str) -> None:
        self.node = node
        self.internal_ip = internal_ip
        self.ws = ws
        self.remote = remote
        self.streams: dict[int, TunnelStream] = {}
        self.closed = trio.Event()
        self.cancel_scope: trio.CancelScope | None = None
        self._next_id = 0
        # One writer owns the websocket: a send cancelled halfway would break the TLS stream under every
        # connection on the tunnel, while a put cancelled on this channel loses nothing.
        self._outbox, self._outbox_out = trio.open_memory_channel[bytes](OUTBOX)

    async def close(self) -> None:
        """Close the tunnel (the edge will dial again): a close handshake of at most a second, then cut."""
        with trio.move_on_after(1):
            try:
                await self.ws.aclose()
            except Exception as exc:  # whatever state the websocket is in, the connection goes
                log.debug("node %s: tunnel close: %r", self.node, exc)
        if self.cancel_scope is not None:
            self.cancel_scope.cancel()

    def open(self) -> TunnelStream:
        if self.closed.is_set():
            raise NodeOffline(f"node {self.node!r}: its stream tunnel just closed")
        self._next_id += 1
        stream = TunnelStream(self, self._next_id)
        self.streams[stream.id] = stream
        return stream

    async def send(self, message: bytes) -> None:
        if self.closed.is_set():
            raise trio.BrokenResourceError(f"node {self.node!r}: tunnel closed")
        try:
            await self._outbox.send(message)
        except trio.ClosedResourceError as exc:
            raise trio.BrokenResourceError(f"node {self.node!r}: tunnel closed") from exc

    async def write_loop(self) -> None:
        from trio_websocket import ConnectionClosed

        try:
            async for message in self._outbox_out:
                await self.ws.send_message(message)
        except ConnectionClosed:
            pass
        finally:
            self._outbox.close()

    async def read_loop(self) -> None:
        from trio_websocket import ConnectionClosed

        try:
            while True:
                message = await self.ws.get_message()
                if isinstance(message, str):
                    log.warning("node %s: text message on the stream tunnel ignored", self.node)
                    continue
                try:
                    frame = decode_frame(message)
                except FrameError as exc:
                    log.warning("node %s: bad tunnel frame dropped: %s", self.node, exc)
                    continue
                stream = self.streams.get(frame.connect_id)
                if stream is None:
                    continue  # the client went away already; the edge learns it from our REMOVE
                try:
                    await stream._send.send(frame)
                except trio.ClosedResourceError:
                    pass
        except ConnectionClosed as exc:
            log.info("cloudstream: node %s tunnel closed: %s", self.node, exc.reason)
        finally:
            self.closed.set()
            self._outbox.close()
            for stream in list(self.streams.values()):
                stream._send.close()


class TunnelServer:
    """Accepts edge tunnels and keeps the newest session per node."""

    def __init__(self, *, handshake_timeout: float = 10.0, max_message_size: int = 4 * 1024 * 1024) -> None:
        self.handshake_timeout = handshake_timeout
        self.max_message_size = max_message_size
        self.sessions: dict[str, TunnelSession] = {}
        self.changed = trio.Event()  # fires when a session comes or goes (tests wait on it)

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_connected(self, node: str) -> TunnelSession:
        while node not in self.sessions:
            await self.changed.wait()
        return self.sessions[node]

    def session(self, node: str) -> TunnelSession:
        session = self.sessions.get(node)
        if session is None or session.closed.is_set():
            raise NodeOffline(f"node {node!r} is offline: no stream tunnel from it is connected to cloudstream")
        return session

    def session_by_address(self, host: str) -> TunnelSession:
        """The session of the node whose InternalIP (or name) is ``host``: how a kubelet request is routed."""
        found = [s for s in self.sessions.values() if host in (s.internal_ip, s.node)]
        if not found:
            raise NodeOffline(f"no edge node with address {host!r} is connected to cloudstream")
        if len(found) > 1:
            named = sorted(s.node for s in found)
            raise NodeOffline(f"several nodes have address {host!r} ({', '.join(named)}); name one")
        return found[0]

    async def serve(self, ssl_ctx: ssl.SSLContext, host: str, port: int, *, task_status: trio.TaskStatus[Any]) -> None:
        await trio.serve_ssl_over_tcp(self._on_connection_guarded, port, ssl_ctx, host=host, task_status=task_status)

    async def _on_connection_guarded(self, stream: trio.SSLStream[Any]) -> None:
        try:
            await self._on_connection(stream)
        except Exception:
            log.exception("cloudstream: tunnel connection from %s failed", _peer(stream))
            await trio.aclose_forcefully(stream)

    async def _on_connection(self, stream: trio.SSLStream[Any]) -> None:
        from trio_websocket import ConnectionClosed, wrap_server_stream

        remote = _peer(stream)
        try:
            with trio.fail_after(self.handshake_timeout):
                await stream.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError, ssl.SSLError, OSError) as exc:
            log.warning("cloudstream: TLS handshake from %s refused: %r", remote, exc)
            await trio.aclose_forcefully(stream)
            return
        der = stream.getpeercert(binary_form=True)
        cert_node = pki.node_from_cert(pki.cert_from_bytes(der)) if der else ""
        try:
            async with trio.open_nursery() as conn_nursery:
                with trio.move_on_after(self.handshake_timeout) as scope:
                    request = await wrap_server_stream(conn_nursery, stream, max_message_size=self.max_message_size)
                if scope.cancelled_caught:
                    log.warning("cloudstream: websocket handshake from %s timed out", remote)
                    conn_nursery.cancel_scope.cancel()
                    return
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
                node = headers.get(NODE_HEADER.lower(), "") or cert_node
                path = request.path.split("?")[0]
                if path != CONNECT_PATH:
                    await request.reject(404, body=f"unknown path {path!r}; edges dial {CONNECT_PATH}".encode())
                    return
                if not cert_node or node != cert_node:
                    reason = f"certificate is for node {cert_node or '(none)'!r}, not {node!r}"
                    log.warning("cloudstream: tunnel from %s refused: %s", remote, reason)
                    await request.reject(403, body=reason.encode())
                    return
                ws = await request.accept()
                internal_ip = headers.get(INTERNAL_IP_HEADER.lower(), "") or remote.rsplit(":", 1)[0]
                session = TunnelSession(node, internal_ip, ws, remote)
                session.cancel_scope = conn_nursery.cancel_scope
                old = self.sessions.get(node)
                self.sessions[node] = session
                self._changed()
                if old is not None:
                    log.info("cloudstream: node %s reconnected; the older tunnel is closed", node)
                    conn_nursery.start_soon(old.close)
                log.info("cloudstream: node %s tunnel up from %s (InternalIP %s)", node, remote, internal_ip)
                try:
                    conn_nursery.start_soon(session.write_loop)
                    await session.read_loop()
                finally:
                    if self.sessions.get(node) is session:
                        del self.sessions[node]
                        self._changed()
                    log.info("cloudstream: node %s tunnel down", node)
                conn_nursery.cancel_scope.cancel()
        except* (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError) as group:
            log.debug("cloudstream: tunnel from %s ended: %r", remote, group.exceptions[0])


def _peer(stream: Any) -> str:
    try:
        host, port = stream.transport_stream.socket.getpeername()[:2]
        return f"{host}:{port}"
    except (OSError, AttributeError):
        return "?"

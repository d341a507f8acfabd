"""kubelet's exec/attach over SPDY/3.1, as a kube-apiserver (and kubectl before 1.30) calls them.

The request is ``POST /exec/{ns}/{pod}[/{uid}]/{container}?command=..&stdin=..`` (or ``/attach/...``) with
``Connection: Upgrade``, ``Upgrade: SPDY/3.1`` and the offered ``X-Stream-Protocol-Version`` values. The
node's tunnel connection is opened first (as for websockets), so an offline node or a bad container is an
HTTP error with a ``Status`` body, not a broken upgrade. Then ``101 Switching Protocols`` names the chosen
protocol (v4.channel.k8s.io when offered, else v3, else v2) and the client opens one stream per
``streamtype`` header: error, stdin, stdout, stderr, resize (a TTY, v3+). Each gets a SYN_REPLY; once the
expected ones are there (30 s at most, as kubelet waits), stdin and resize go to the edge and the edge's
stdout/stderr come back on their streams. At the end stdout/stderr get FIN, the error stream carries the
final ``Status`` (v4: the JSON kubelet writes, ``NonZeroExitCode`` with the code; v2/v3: the error's text),
and the connection ends with GOAWAY once the client has closed (or after a few seconds).
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qs

import trio

from kubeedge.plugins.common.front import RequestHead, http_error
from kubeedge.plugins.common.spdy import REFUSED_STREAM
from kubeedge.plugins.common.spdy_session import SpdyConnection, SpdyStream
from kubeedge.plugins.common.stream_protocol import (
    ATTACH,
    CHANNEL_CLOSE,
    CHANNEL_RESIZE,
    CHANNEL_STDERR,
    CHANNEL_STDIN,
    CHANNEL_STDOUT,
    CLOSE,
    DATA,
    EXEC,
    ExecRequest,
    exec_status,
    k8s_status,
)

from .kubelet import HttpError, KubeletApp, _final_status, _flag, _kind
from .tunnel import NodeOffline, TunnelStream

__all__ = ["PROTOCOLS", "serve_spdy"]

log = logging.getLogger("kubeedge.cloudstream")

PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io")
STREAM_TYPES = ("error", "stdin", "stdout", "stderr", "resize")
STREAM_CREATION_TIMEOUT = 30.0
CLOSE_WAIT = 5.0  # after GOAWAY, how long the client has to close its side


def switching(protocol: str) -> bytes:
    return (
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        f"X-Stream-Protocol-Version: {protocol}\r\n\r\n"
    ).encode()


async def serve_spdy(app: KubeletApp, head: RequestHead, stream: trio.abc.Stream) -> None:
    """Serve one upgraded request on the raw (TLS) connection; returns when it is over."""
    try:
        parts = [p for p in head.path.split("/") if p]
        if not parts or parts[0] not in ("exec", "attach") or len(parts) not in (4, 5):
            raise HttpError(404, f"cloudstream: {head.path!r} does not upgrade to SPDY (only exec and attach do)")
        kind = EXEC if parts[0] == "exec" else ATTACH
        namespace, pod, container = parts[1], parts[2], parts[-1]
        query = parse_qs(head.query, keep_blank_values=True)
        offered = head.get_all("x-stream-protocol-version")
        chosen = next((p for p in PROTOCOLS if p in offered), None)
        if chosen is None:
            raise HttpError(
                403,
                f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
                f"server supports {list(PROTOCOLS)}",
            )
        command = query.get("command", [])
        if kind == EXEC and not command:
            raise HttpError(400, "exec: no command given (command=...)")
        request = ExecRequest(
            namespace,
            pod,
            container,
            command=command if kind == EXEC else [],
            stdin=_flag(query, "stdin", "input"),
            # as kubelet parses them: a stream not asked for is not expected (nor created by the client)
            stdout=_flag(query, "stdout", "output"),
            stderr=_flag(query, "stderr", "error"),
            tty=_flag(query, "tty"),
        )
        if request.tty:
            request.stderr = False  # a terminal has one output stream, as kubelet does
        scope = {"headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in head.headers]}
        session = app.tunnel_for(scope)
        tunnel = await app._open(session, kind, request.encode())
    except HttpError as exc:
        await stream.send_all(http_error(exc.code, k8s_status(exc.code, exc.message)))
        return
    except NodeOffline as exc:
        await stream.send_all(http_error(503, k8s_status(503, str(exc))))
        return
    try:
        await stream.send_all(switching(chosen))
        await _session(stream, session.node, tunnel, request, kind, chosen)
    finally:
        with trio.CancelScope(shield=True):
            await tunnel.aclose()


def _expected(request: ExecRequest, protocol: str) -> set[str]:
    wanted = {"error"}
    if request.stdin:
        wanted.add("stdin")
    if request.stdout:
        wanted.add("stdout")
    if request.stderr and not request.tty:
        wanted.add("stderr")
    if request.tty and protocol != "v2.channel.k8s.io":
        wanted.add("resize")
    return wanted


async def _session(
    transport: trio.abc.Stream, node: str, tunnel: TunnelStream, request: ExecRequest, kind: int, protocol: str
) -> None:
    what = f"{_kind(kind)} {request.namespace}/{request.pod}/{request.container} on node {node}"
    conn = SpdyConnection(transport, server=True, name=f"cloudstream: SPDY {what}")
    expected = _expected(request, protocol)
    streams: dict[str, SpdyStream] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        with trio.move_on_after(STREAM_CREATION_TIMEOUT):
            while not expected <= streams.keys():
                stream = await conn.accept()
                if stream is None:
                    break
                if not await _take(stream, streams):
                    continue
        if not expected <= streams.keys():
            missing = ", ".join(sorted(expected - streams.keys()))
            log.info("cloudstream: %s: the client did not open its streams (%s missing)", what, missing)
            if "error" in streams and not conn.closed.is_set():
                status = exec_status(request.command, None, f"timed out waiting for the client's streams: {missing}")
                await streams["error"].send(_status_bytes(status, protocol), fin=True)
            nursery.cancel_scope.cancel()
            return
        nursery.start_soon(_accept_late, conn, streams)
        try:
            status = await _relay(conn, node, tunnel, request, kind, streams)
        except trio.BrokenResourceError:
            status = None
        if status is None or conn.closed.is_set():  # the client went away: nothing more to tell it
            nursery.cancel_scope.cancel()
            return
        with trio.move_on_after(CLOSE_WAIT):
            for name in ("stdout", "stderr", "stdin", "resize"):
                if name in streams:
                    await streams[name].close()
            await streams["error"].send(_status_bytes(status, protocol), fin=True)
            await conn.goaway()
            await conn.closed.wait()
        nursery.cancel_scope.cancel()


async def _take(stream: SpdyStream, streams: dict[str, SpdyStream]) -> bool:
    kind = stream.header("streamtype")
    if kind not in STREAM_TYPES or kind in streams:
        log.info("cloudstream: SPDY stream %d refused: streamtype %r", stream.id, kind)
        await stream.send_reset(REFUSED_STREAM)
        return False
    await stream.reply([])
    streams[kind] = stream
    return True


async def _accept_late(conn: SpdyConnection, streams: dict[str, SpdyStream]) -> None:
    """Streams opened after the expected ones: a known type not yet seen is taken, others refused."""
    while (stream := await conn.accept()) is not None:
        await _take(stream, streams)


def _status_bytes(status: dict[str, Any], protocol: str) -> bytes:
    if protocol == "v4.channel.k8s.io":
        return json.dumps(status).encode()
    return b"" if status.get("status") == "Success" else str(status.get("message", "")).encode()


async def _relay(
    conn: SpdyConnection,
    node: str,
    tunnel: TunnelStream,
    request: ExecRequest,
    kind: int,
    streams: dict[str, SpdyStream],
) -> dict[str, Any] | None:
    """Relay until the edge ends the exec: its final Status, or None when the client left first."""
    command = request.command
    status: dict[str, Any] | None = exec_status(command, None, f"node {node!r}: the stream ended early")
    outputs = {CHANNEL_STDOUT: streams.get("stdout"), CHANNEL_STDERR: streams.get("stderr") or streams.get("stdout")}

    async def stdin(source: SpdyStream) -> None:
        while data := await source.receive_some():
            await tunnel.send_data(bytes([CHANNEL_STDIN]) + data)
        await tunnel.send_data(bytes([CHANNEL_CLOSE, CHANNEL_STDIN]))

    async def resize(source: SpdyStream) -> None:
        decoder, buffer = json.JSONDecoder(), ""
        while data := await source.receive_some():
            buffer += data.decode("utf-8", "replace")
            while buffer.strip():
                buffer = buffer.lstrip()
                try:
                    size, end = decoder.raw_decode(buffer)
                except ValueError:
                    break  # an object cut in two: wait for the rest
                buffer = buffer[end:]
                await tunnel.send_data(bytes([CHANNEL_RESIZE]) + json.dumps(size).encode())

    async with trio.open_nursery() as nursery:

        async def client_gone() -> None:
            nonlocal status
            await conn.closed.wait()
            status = None
            nursery.cancel_scope.cancel()

        nursery.start_soon(client_gone)
        if "stdin" in streams:
            nursery.start_soon(stdin, streams["stdin"])
        if "resize" in streams:
            nursery.start_soon(resize, streams["resize"])
        while True:
            frame = await tunnel.receive()
            if frame is None:
                status = exec_status(command, None, f"node {node!r} went offline during the {_kind(kind)}")
                break
            if frame.type == DATA and len(frame.data) > 1:
                target = outputs.get(frame.data[0])
                if target is not None:
                    await target.send(frame.data[1:])
            elif frame.type == CLOSE:
                status = _final_status(frame, command)
                break
        nursery.cancel_scope.cancel()
    return status

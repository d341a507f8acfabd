"""The node-facing (kubelet) API that cloudstream serves to an API server, answered through the tunnels.

Routes, as kubelet's server has them:

- ``GET /containerLogs/{namespace}/{pod}/{container}?follow=&tailLines=&previous=&timestamps=&sinceSeconds=
  &limitBytes=``: the container's log as ``text/plain``, streamed while ``follow`` is true.
- ``/exec/{namespace}/{pod}[/{uid}]/{container}?command=..&stdin|input=&stdout|output=&stderr|error=&tty=``
  and ``/attach/...``: websocket, subprotocol ``v5.channel.k8s.io`` (or ``v4.channel.k8s.io``); channels 0
  stdin, 1 stdout, 2 stderr, 3 the final ``Status``, 4 resize, 255 close (v5).
- the same ``/exec`` and ``/attach`` upgraded to SPDY/3.1 (``X-Stream-Protocol-Version`` v4/v3/v2), as a
  kube-apiserver calls kubelet: served on the raw connection by spdy_exec.py, behind the front in
  plugins/common/front.py.
- ``GET /stats/summary`` (kubelet's Summary API, JSON) and ``GET /metrics/resource`` (Prometheus text, what
  metrics-server scrapes): the node's answer, whole, with its content type.

The node is the one the ``X-Kubeedge-Node`` header names (the embedded API server sets it), else the one whose
InternalIP is the request's host, which is how a real API server's request for ``<node IP>:10350`` arrives.
An offline node gets HTTP 503 with a ``Status`` naming it, at once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import trio

from kubeedge.plugins.common.asgi import serve_lifespan
from kubeedge.plugins.common.stream_protocol import (
    ATTACH,
    CHANNEL_CLOSE,
    CHANNEL_ERROR,
    CHANNEL_RESIZE,
    CHANNEL_STDIN,
    CLOSE,
    DATA,
    EXEC,
    LOGS,
    METRIC,
    ExecRequest,
    Frame,
    FrameError,
    LogsRequest,
    MetricsRequest,
    exec_status,
    k8s_status,
)

from .tunnel import NodeOffline, TunnelServer, TunnelStream

__all__ = ["NODE_HEADER", "SUBPROTOCOLS", "KubeletApp"]

log = logging.getLogger("kubeedge.cloudstream")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

NODE_HEADER = "x-kubeedge-node"
SUBPROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")


class HttpError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _flag(query: dict[str, list[str]], *names: str, default: bool = False) -> bool:
    for name in names:
        if name in query:
            return query[name][-1].lower() in ("1", "true", "yes", "")
    return default


def _int(query: dict[str, list[str]], name: str) -> int | None:
    if name not in query or query[name][-1] == "":
        return None
    try:
        return int(query[name][-1])
    except ValueError:
        raise HttpError(400, f"{name} must be an integer, not {query[name][-1]!r}") from None


class KubeletApp:
    """ASGI app; ``request_timeout`` bounds the wait for the edge's first answer."""

    def __init__(self, tunnels: TunnelServer, *, request_timeout: float = 10.0) -> None:
        self.tunnels = tunnels
        self.request_timeout = request_timeout
        self.metrics: Any = None  # ctx.metrics, set by the module
        self.stopping = trio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        parts = [p for p in scope["path"].split("/") if p]
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        if self.metrics is not None:
            known = ("containerLogs", "exec", "attach", "stats", "metrics")
            kind = parts[0] if parts and parts[0] in known else "other"
            self.metrics.inc("kubeedge_stream_requests_total", help="Kubelet API requests served", kind=kind)
        try:
            if "/" + "/".join(parts) in MetricsRequest.PATHS:
                if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD"):
                    raise HttpError(405, f"{scope['path']} answers GET only")
                await self.stats(scope, send, "/" + "/".join(parts))
                return
            if not parts or parts[0] not in ("containerLogs", "exec", "attach") or len(parts) not in (4, 5):
                raise HttpError(404, f"cloudstream: no such kubelet path {scope['path']!r}")
            if parts[0] == "containerLogs" and len(parts) != 4:
                raise HttpError(404, f"cloudstream: no such kubelet path {scope['path']!r}")
            namespace, pod, container = parts[1], parts[2], parts[-1]
            if parts[0] == "containerLogs":
                if scope["type"] != "http":
                    raise HttpError(400, "containerLogs is plain HTTP, not a websocket")
                await self.logs(scope, receive, send, query, namespace, pod, container)
                return
            kind = EXEC if parts[0] == "exec" else ATTACH
            if scope["type"] != "websocket":
                self.tunnel_for(scope)  # an offline node is named first
                raise HttpError(
                    400,
                    "exec/attach need an upgrade: a websocket (v5.channel.k8s.io, v4.channel.k8s.io) or "
                    "SPDY/3.1 (Connection: Upgrade, Upgrade: SPDY/3.1)",
                )
            await self.exec(scope, receive, send, query, kind, namespace, pod, container)
        except HttpError as exc:
            await _deny(scope, receive, send, exc.code, k8s_status(exc.code, exc.message))
        except NodeOffline as exc:
            await _deny(scope, receive, send, 503, k8s_status(503, str(exc)))

    def tunnel_for(self, scope: dict[str, Any]) -> Any:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        node = headers.get(NODE_HEADER, "")
        if node:
            return self.tunnels.session(node)
        host = headers.get("host", "")
        host = host[1:].split("]")[0] if host.startswith("[") else host.rsplit(":", 1)[0]
        return self.tunnels.session_by_address(host)

    async def _open(self, session: Any, kind: int, request: bytes) -> TunnelStream:
        stream, _ = await self._open_with_reply(session, kind, request)
        return stream

    async def _open_with_reply(self, session: Any, kind: int, request: bytes) -> tuple[TunnelStream, dict[str, Any]]:
        """Open a connection on the tunnel and wait for the edge to accept it (or say why not)."""
        stream: TunnelStream = session.open()
        try:
            await stream.send(kind, request)
            with trio.move_on_after(self.request_timeout) as timeout:
                frame = await stream.receive()
            if timeout.cancelled_caught:
                raise HttpError(504, f"node {session.node!r} did not answer within {self.request_timeout:g} s")
            if frame is None:
                raise NodeOffline(f"node {session.node!r} went offline while the request was sent")
            if frame.type == CLOSE:
                raise HttpError(500, f"node {session.node!r}: {_close_reason(frame)}")
            reply = frame.json()
            if not reply.get("ok"):
                raise HttpError(int(reply.get("code") or 500), f"node {session.node!r}: {reply.get('message')}")
        except BaseException:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            raise
        return stream, reply

    # -- stats ------------------------------------------------------------------------------------------

    async def stats(self, scope: dict[str, Any], send: Send, path: str) -> None:
        """One of kubelet's stats paths, answered by the node whole (the body is small: one JSON document
        or one Prometheus page), within ``request_timeout``."""
        session = self.tunnel_for(scope)
        query = scope.get("query_string", b"").decode("latin-1")
        stream, reply = await self._open_with_reply(session, METRIC, MetricsRequest(path, query).encode())
        body = bytearray()
        try:
            with trio.move_on_after(self.request_timeout) as timeout:
                while (frame := await stream.receive()) is not None and frame.type != CLOSE:
                    if frame.type == DATA:
                        body += frame.data[1:]
            if timeout.cancelled_caught:
                raise HttpError(504, f"node {session.node!r} did not finish {path} within {self.request_timeout:g} s")
            if frame is None:
                raise NodeOffline(f"node {session.node!r} went offline while answering {path}")
            if reason := _close_reason(frame):
                raise HttpError(500, f"node {session.node!r}: {path}: {reason}")
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()
        content_type = str(reply.get("contentType") or "application/octet-stream").encode()
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": bytes(body) if scope.get("method") != "HEAD" else b""})

    # -- logs -------------------------------------------------------------------------------------------

    async def logs(
        self,
        scope: dict[str, Any],
        receive: Receive,
        send: Send,
        query: dict[str, list[str]],
        namespace: str,
        pod: str,
        container: str,
    ) -> None:
        request = LogsRequest(
            namespace,
            pod,
            container,
            follow=_flag(query, "follow"),
            tail_lines=_int(query, "tailLines"),
            previous=_flag(query, "previous"),
            timestamps=_flag(query, "timestamps"),
            since_seconds=_int(query, "sinceSeconds"),
            limit_bytes=_int(query, "limitBytes"),
        )
        session = self.tunnel_for(scope)
        stream = await self._open(session, LOGS, request.encode())
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"cache-control", b"no-cache")],
                }
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_until_disconnect, receive, nursery.cancel_scope)
                while True:
                    frame = await stream.receive()
                    if frame is None or frame.type == CLOSE:
                        if frame is not None and (reason := _close_reason(frame)):
                            log.info("cloudstream: logs of %s/%s/%s ended: %s", namespace, pod, container, reason)
                        break
                    if frame.type == DATA and len(frame.data) > 1:
                        await send({"type": "http.response.body", "body": frame.data[1:], "more_body": True})
                nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    # -- exec / attach ----------------------------------------------------------------------------------

    async def exec(
        self,
        scope: dict[str, Any],
        receive: Receive,
        send: Send,
        query: dict[str, list[str]],
        kind: int,
        namespace: str,
        pod: str,
        container: str,
    ) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        offered = list(scope.get("subprotocols") or [])
        chosen = next((p for p in SUBPROTOCOLS if p in offered), None)
        if chosen is None:
            raise HttpError(400, f"websocket subprotocol must be one of {', '.join(SUBPROTOCOLS)}; offered {offered}")
        command = query.get("command", [])
        if kind == EXEC and not command:
            raise HttpError(400, "exec: no command given (command=...)")
        request = ExecRequest(
            namespace,
            pod,
            container,
            command=command if kind == EXEC else [],
            stdin=_flag(query, "stdin", "input"),
            stdout=_flag(query, "stdout", "output", default=True),
            stderr=_flag(query, "stderr", "error", default=True),
            tty=_flag(query, "tty"),
        )
        if request.tty:
            request.stderr = False  # a terminal has one output stream, as kubelet does
        session = self.tunnel_for(scope)
        stream = await self._open(session, kind, request.encode())
        v5 = chosen.startswith("v5")
        try:
            await send({"type": "websocket.accept", "subprotocol": chosen})
            status: dict[str, Any] = exec_status(command, None, f"node {session.node!r}: the stream ended early")
            async with trio.open_nursery() as nursery:

                async def client_to_edge() -> None:
                    while True:
                        message = await receive()
                        if message["type"] == "websocket.disconnect":
                            nursery.cancel_scope.cancel()
                            return
                        data = message.get("bytes")
                        if data is None and message.get("text") is not None:
                            data = message["text"].encode()
                        if not data:
                            continue
                        channel = data[0]
                        if channel in (CHANNEL_STDIN, CHANNEL_RESIZE) or (v5 and channel == CHANNEL_CLOSE):
                            await stream.send_data(data)

                nursery.start_soon(client_to_edge)
                while True:
                    frame = await stream.receive()
                    if frame is None:
                        status = exec_status(
                            command, None, f"node {session.node!r} went offline during the {_kind(kind)}"
                        )
                        break
                    if frame.type == DATA and frame.data:
                        await send({"type": "websocket.send", "bytes": frame.data})
                    elif frame.type == CLOSE:
                        status = _final_status(frame, command)
                        break
                nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await send({"type": "websocket.send", "bytes": bytes([CHANNEL_ERROR]) + json.dumps(status).encode()})
                await send({"type": "websocket.close", "code": 1000})
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()


def _kind(kind: int) -> str:
    return "exec" if kind == EXEC else "attach"


def _close_reason(frame: Frame) -> str:
    try:
        body = frame.json() if frame.data else {}
    except FrameError:
        return frame.data.decode(errors="replace")
    return str(body.get("error") or "") if isinstance(body, dict) else ""


def _final_status(frame: Frame, command: list[str]) -> dict[str, Any]:
    try:
        body = frame.json() if frame.data else {}
    except FrameError as exc:
        return exec_status(command, None, str(exc))
    if not isinstance(body, dict):
        return exec_status(command, None, f"bad close frame {body!r}")
    if body.get("error"):
        return exec_status(command, None, str(body["error"]))
    code = body.get("exitCode")
    return exec_status(command, int(code) if isinstance(code, int) else None)


async def _until_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def _deny(scope: dict[str, Any], receive: Receive, send: Send, code: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send({"type": "websocket.http.response.start", "status": code, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": payload})
    else:
        await send({"type": "websocket.close", "code": 1011, "reason": body.get("message", "")[:120]})

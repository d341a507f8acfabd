"""The edge ``servicebus`` module: HTTP between the cloud router and apps on the edge node.

* cloud -> edge app: a ``router_servicebus`` ``query`` carries ``{method, port, path, header, body}``
  (body base64); the servicebus calls ``http://127.0.0.1:<port><path>`` and answers upstream with a
  ``response`` (``parent_msg_id`` = the request) carrying ``{code, header, body}``.
* edge app -> cloud: apps call ``http://127.0.0.1:9060/<path>``; the request goes up to the router, which
  forwards it only where a rule (source ``servicebus``, ``sourceResource.path``) allows, and the answer
  comes back as the HTTP response (504 when the cloud does not answer within ``timeout``, 503 when the
  edge has no link module).

Bodies are limited to 12 MiB both ways (413 beyond).
"""

from __future__ import annotations

import base64
import logging
from functools import partial
from typing import Any
from urllib.parse import unquote

import trio

from kubeedge import BaseModule, Context, Message
from kubeedge.plugins.common.asgi import read_body, serve_lifespan

log = logging.getLogger("kubeedge.servicebus")

__all__ = ["MAX_MESSAGE_BYTES", "ServiceBus"]

MAX_MESSAGE_BYTES = 12 * (1 << 20)
HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


class ServiceBus(BaseModule):
    name = "servicebus"
    group = "bus"

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.timeout = float(self.config.get("timeout", 60))
        self.port: int | None = None
        self.workers = int(self.config.get("maxConcurrent", 32))
        self._ctx: Context | None = None

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        from hypercorn.config import Config
        from hypercorn.trio import serve

        self._ctx = ctx
        config = Config()
        config.bind = [f"{self.config.get('address', '127.0.0.1')}:{self.config.get('port', 9060)}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("kubeedge.servicebus.http")
        config.include_server_header = False
        async with trio.open_nursery() as nursery:
            app: Any = self._asgi
            binds = await nursery.start(partial(serve, app, config, mode="asgi"))
            self.port = int(binds[0].rsplit(":", 1)[1])
            for _ in range(self.workers):
                nursery.start_soon(self._worker, ctx)
            log.info("servicebus on node %s: HTTP on %s", ctx.node_name, binds[0])
            task_status.started()

    # -- cloud -> edge app ----------------------------------------------------------------------------

    async def _worker(self, ctx: Context) -> None:
        async for message in ctx.bus.channel(self.name):
            if message.operation == "query" and isinstance(message.content, dict):
                try:
                    answer = await self._call_app(message.content)
                except Exception as exc:
                    log.error("servicebus on %s: request %s failed: %s", ctx.node_name, message.resource, exc)
                    answer = {"code": 502, "header": {}, "body": base64.b64encode(str(exc).encode()).decode()}
                reply = message.reply(answer, source=self.name)
                reply.group = "user"
                reply.sync = False
                if ctx.bus.has_module("websocket"):
                    await ctx.send("websocket", reply)
            else:
                log.debug("servicebus ignores %s %s from %s", message.operation, message.resource, message.source)

    async def _call_app(self, request: dict[str, Any]) -> dict[str, Any]:
        import httpx

        port = int(request.get("port") or 0)
        path = str(request.get("path") or "/")
        if not 0 < port < 65536 or not path.startswith("/"):
            return {"code": 400, "header": {}, "body": base64.b64encode(b"bad servicebus request").decode()}
        body = base64.b64decode(request.get("body") or "")
        if len(body) > MAX_MESSAGE_BYTES:
            return {"code": 413, "header": {}, "body": ""}
        headers = {k: v for k, v in (request.get("header") or {}).items() if k.lower() not in HOP_HEADERS}
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.request(
                    str(request.get("method") or "GET"), f"http://127.0.0.1:{port}{path}", content=body, headers=headers
                )
        except httpx.HTTPError as exc:
            return {
                "code": 502,
                "header": {},
                "body": base64.b64encode(f"{type(exc).__name__}: {exc}".encode()).decode(),
            }
        if len(response.content) > MAX_MESSAGE_BYTES:
            return {"code": 413, "header": {}, "body": ""}
        return {
            "code": response.status_code,
            "header": {k: v for k, v in response.headers.items() if k.lower() not in HOP_HEADERS},
            "body": base64.b64encode(response.content).decode(),
        }

    # -- edge app -> cloud ----------------------------------------------------------------------------

    async def _asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        status, headers, body = await self._to_cloud(scope, receive)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _to_cloud(self, scope: dict[str, Any], receive: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        ctx = self._ctx
        assert ctx is not None
        body = await read_body(scope, receive, MAX_MESSAGE_BYTES)
        if body is None:
            return _text(413, f"request body over {MAX_MESSAGE_BYTES} bytes")
        if not ctx.bus.has_module("websocket"):
            return _text(503, "no link to the cloud on this node")
        path = unquote(scope["path"])
        request = {
            "method": scope["method"],
            "path": path,
            "query": scope.get("query_string", b"").decode(),
            "header": {
                k.decode("latin-1"): v.decode("latin-1")
                for k, v in scope["headers"]
                if k.decode("latin-1").lower() not in HOP_HEADERS
            },
            "body": base64.b64encode(body).decode(),
        }
        message = Message(
            source=self.name, group="user", operation="query", resource=f"servicebus{path}", content=request
        )
        try:
            reply = await ctx.send_sync("websocket", message, timeout=self.timeout)
        except Exception as exc:
            return _text(504, f"no answer from the cloud: {exc}")
        answer = reply.content if isinstance(reply.content, dict) else {}
        if "code" not in answer:
            return _text(502, f"cloud: {reply.content}")
        headers = [
            (str(k).lower().encode("latin-1"), str(v).encode("latin-1"))
            for k, v in (answer.get("header") or {}).items()
            if str(k).lower() not in HOP_HEADERS
        ]
        return int(answer["code"]), headers, base64.b64decode(answer.get("body") or "")


def _text(status: int, text: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return status, [(b"content-type", b"text/plain; charset=utf-8")], text.encode()

"""The cloud ``router`` module: Rule/RuleEndpoint message routing between the cloud's REST and edges.

* rest -> eventbus: ``POST http://<cloud>:9443/<node>/<namespace>/<path>`` with a rule whose source is a
  ``rest`` endpoint (``sourceResource.path``) and target an ``eventbus`` endpoint (``targetResource.topic``):
  the body is published on that topic by the node's eventbus (message ``router_eventbus``/``user``/
  ``publish`` through cloudhub).
* eventbus -> rest: an edge app publishes on a rule's ``sourceResource.topic`` (on node
  ``sourceResource.node_name``); the router POSTs the payload to ``targetResource.resource``. The router
  asks the node's eventbus to subscribe to such topics (``subscribe``) at start and every
  ``resyncInterval`` seconds, since edges connect and reconnect at any time.
* rest -> servicebus: the request (method, path, query, headers, body) goes to the node's servicebus, which
  calls ``http://127.0.0.1:<service_port><targetResource.path>``; the answer comes back as the HTTP response.
* servicebus -> rest: an edge app calls the node's servicebus (:9060) on a rule's ``sourceResource.path``;
  the router makes the request to ``targetResource.resource`` and returns the response.

Bodies are limited to 12 MiB both ways (413 beyond); each rule counts successes and failures.
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

from .rules import (
    ApiRuleSource,
    ConfigRuleSource,
    Rule,
    RuleEndpoint,
    RuleSource,
    RuleStatus,
    path_matches,
    topic_matches,
)

log = logging.getLogger("kubeedge.router")

__all__ = ["MAX_MESSAGE_BYTES", "Router"]

MAX_MESSAGE_BYTES = 12 * (1 << 20)
HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}
Response = tuple[int, list[tuple[bytes, bytes]], bytes]


class Router(BaseModule):
    name = "router"
    group = "router"
    after = ("apiserver", "cloudhub")

    def __init__(self, config: dict[str, Any] | None = None, source: RuleSource | None = None) -> None:
        super().__init__(config)
        self.rules_from = self.config.get("rulesFrom", "config")
        # With rulesFrom: api the source needs the node's data directory; it is made in run().
        self.source: RuleSource = source or ConfigRuleSource(self.config if self.rules_from == "config" else {})
        self.status: dict[str, RuleStatus] = {}
        self.status_changed = trio.Event()
        self.timeout = float(self.config.get("restTimeout", 60))
        self.resync_interval = float(self.config.get("resyncInterval", 30))
        self.port: int | None = None
        self._ctx: Context | None = None
        self.workers = int(self.config.get("maxConcurrent", 64))

    # -- running --------------------------------------------------------------------------------------

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        from hypercorn.config import Config
        from hypercorn.trio import serve

        self._ctx = ctx
        if self.rules_from == "api" and isinstance(self.source, ConfigRuleSource):
            from kubeedge.plugins.common.kube import kubeconfig_path

            configured = self.config.get("kubeconfig")
            path = kubeconfig_path(configured, ctx.data_dir)
            if not path.exists():
                raise FileNotFoundError(f"router: no kubeconfig at {path} (set modules.router.kubeconfig)")
            self.source = ApiRuleSource(path, status_interval=float(self.config.get("statusInterval", 1.0)))
        config = Config()
        config.bind = [f"{self.config.get('address', '0.0.0.0')}:{self.config.get('port', 9443)}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("kubeedge.router.http")
        config.include_server_header = False
        async with trio.open_nursery() as nursery:
            source_run = getattr(self.source, "run", None)
            if source_run is not None:
                await nursery.start(source_run)
            app: Any = self._asgi
            binds = await nursery.start(partial(serve, app, config, mode="asgi"))
            self.port = int(binds[0].rsplit(":", 1)[1])
            nursery.start_soon(self._resync_subscriptions, ctx)
            log.info("router: REST on %s (%d rules)", binds[0], len(self.source.rules()))
            # A fixed pool: one slow REST target holds one worker, not the whole router.
            for _ in range(self.workers):
                nursery.start_soon(self._worker, ctx)
            task_status.started()

    async def _worker(self, ctx: Context) -> None:
        async for message in ctx.bus.channel(self.name):
            await self._from_edge(ctx, message)

    # -- rules ----------------------------------------------------------------------------------------

    def _endpoint(self, rule: Rule, name: str) -> RuleEndpoint | None:
        return self.source.endpoints().get((rule.namespace, name))

    def _rules_from(self, kind: str) -> list[tuple[Rule, RuleEndpoint, RuleEndpoint]]:
        found = []
        for rule in self.source.rules():
            source, target = self._endpoint(rule, rule.source), self._endpoint(rule, rule.target)
            if source is not None and target is not None and source.type == kind:
                found.append((rule, source, target))
        return found

    def _count(self, rule: Rule, ok: bool, error: str = "") -> None:
        status = self.status.setdefault(rule.key, RuleStatus())
        status.count(ok, error)
        self.status_changed.set()
        self.status_changed = trio.Event()
        if not ok:
            log.warning("router: rule %s failed: %s", rule.key, error)
        try:
            self.source.record(rule, status)
        except Exception as exc:
            log.warning("router: recording status of rule %s failed: %s", rule.key, exc)

    async def _resync_subscriptions(self, ctx: Context) -> None:
        while True:
            for rule, _source, _target in self._rules_from("eventbus"):
                node, topic = rule.source_resource.get("node_name"), rule.source_resource.get("topic")
                if node and topic and ctx.bus.has_module("cloudhub"):
                    await ctx.send(
                        "cloudhub",
                        Message(
                            source="router_eventbus",
                            group="user",
                            operation="subscribe",
                            resource=f"node/{node}/{topic}",
                        ),
                    )
            await trio.sleep(self.resync_interval)

    # -- REST ingress ---------------------------------------------------------------------------------

    async def _asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        status, headers, body = await self._rest(scope, receive)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _rest(self, scope: dict[str, Any], receive: Any) -> Response:
        parts = unquote(scope["path"]).lstrip("/").split("/", 2)
        if len(parts) < 3 or not all(parts):
            return _json(404, {"message": "use /<node_name>/<namespace>/<path>"})
        node, namespace, path = parts[0], parts[1], "/" + parts[2]
        body = await read_body(scope, receive, MAX_MESSAGE_BYTES)
        if body is None:
            return _json(413, {"message": f"request body over {MAX_MESSAGE_BYTES} bytes"})
        for rule, _source, target in self._rules_from("rest"):
            if rule.namespace != namespace or not path_matches(rule.source_resource.get("path", ""), path):
                continue
            if target.type == "eventbus":
                return await self._rest_to_eventbus(rule, node, body)
            if target.type == "servicebus":
                return await self._rest_to_servicebus(rule, target, node, scope, body)
            self._count(rule, False, f"target type {target.type} cannot take REST requests")
            return _json(400, {"message": f"rule {rule.key}: rest -> {target.type} is not supported"})
        return _json(404, {"message": f"no rule for {scope['method']} {path} in namespace {namespace}"})

    async def _rest_to_eventbus(self, rule: Rule, node: str, body: bytes) -> Response:
        ctx = self._ctx
        assert ctx is not None
        topic = rule.target_resource.get("topic", "")
        if not topic:
            self._count(rule, False, "targetResource.topic is empty")
            return _json(500, {"message": f"rule {rule.key} has no targetResource.topic"})
        if not ctx.bus.has_module("cloudhub"):
            self._count(rule, False, "cloudhub is not running")
            return _json(503, {"message": "cloudhub is not running"})
        message = Message(
            source="router_eventbus",
            group="user",
            operation="publish",
            resource=f"node/{node}/{topic}",
            content=body.decode("utf-8", errors="replace"),
        )
        await ctx.send("cloudhub", message)
        self._count(rule, True)
        return _json(200, {"message": "published", "node": node, "topic": topic, "msg_id": message.msg_id})

    async def _rest_to_servicebus(
        self, rule: Rule, target: RuleEndpoint, node: str, scope: dict[str, Any], body: bytes
    ) -> Response:
        ctx = self._ctx
        assert ctx is not None
        if not ctx.bus.has_module("cloudhub"):
            self._count(rule, False, "cloudhub is not running")
            return _json(503, {"message": "cloudhub is not running"})
        path = rule.target_resource.get("path", "/")
        query = scope.get("query_string", b"").decode()
        request = {
            "method": scope["method"],
            "port": int(target.properties["service_port"]),
            "path": path + (f"?{query}" if query else ""),
            "header": _headers(scope["headers"]),
            "body": base64.b64encode(body).decode(),
        }
        message = Message(
            source="router_servicebus", group="user", operation="query", resource=f"node/{node}{path}", content=request
        )
        try:
            reply = await ctx.send_sync("cloudhub", message, timeout=self.timeout)
        except Exception as exc:
            self._count(rule, False, f"{type(exc).__name__}: {exc}")
            return _json(504, {"message": f"no answer from node {node}: {exc}"})
        answer = reply.content if isinstance(reply.content, dict) else {}
        if reply.operation == "error" or "code" not in answer:
            self._count(rule, False, f"node {node}: {reply.content!r:.200}")
            return _json(502, {"message": f"node {node}: {reply.content}"})
        code = int(answer["code"])
        self._count(rule, code < 500)
        return code, _header_list(answer.get("header") or {}), base64.b64decode(answer.get("body") or "")

    # -- from edges -----------------------------------------------------------------------------------

    async def _from_edge(self, ctx: Context, message: Message) -> None:
        parts = message.resource.split("/", 2)
        if len(parts) < 3 or parts[0] != "node":
            log.debug("router ignores %s %s from %s", message.operation, message.resource, message.source)
            return
        node, rest = parts[1], parts[2]
        try:
            if message.operation == "upload":
                await self._eventbus_to_rest(node, rest, message)
            elif message.operation == "query" and rest.startswith("servicebus/"):
                await self._servicebus_to_rest(ctx, node, rest[len("servicebus") :], message)
            else:
                log.debug("router ignores %s %s from %s", message.operation, message.resource, message.source)
        except Exception as exc:
            log.error("router: %s %s from node %s failed: %s", message.operation, rest, node, exc)

    async def _eventbus_to_rest(self, node: str, topic: str, message: Message) -> None:
        import httpx

        body = message.content if isinstance(message.content, str) else str(message.content or "")
        for rule, _source, target in self._rules_from("eventbus"):
            want_node = rule.source_resource.get("node_name")
            if (want_node and want_node != node) or not topic_matches(rule.source_resource.get("topic", "\x00"), topic):
                continue
            if target.type != "rest":
                self._count(rule, False, f"eventbus -> {target.type} is not supported")
                continue
            url = rule.target_resource.get("resource", "")
            try:
                async with httpx.AsyncClient(timeout=self.timeout) as client:
                    response = await client.post(url, content=body.encode())
                self._count(rule, response.status_code < 400, f"POST {url}: {response.status_code}")
            except httpx.HTTPError as exc:
                self._count(rule, False, f"POST {url}: {type(exc).__name__}: {exc}")

    async def _servicebus_to_rest(self, ctx: Context, node: str, path: str, message: Message) -> None:
        import httpx

        request = message.content if isinstance(message.content, dict) else {}
        answer: dict[str, Any] = {
            "code": 404,
            "header": {},
            "body": base64.b64encode(b"no rule for " + path.encode()).decode(),
        }
        for rule, _source, target in self._rules_from("servicebus"):
            want_node = rule.source_resource.get("node_name")
            if (want_node and want_node != node) or not path_matches(rule.source_resource.get("path", ""), path):
                continue
            if target.type != "rest":
                self._count(rule, False, f"servicebus -> {target.type} is not supported")
                answer = {"code": 400, "header": {}, "body": ""}
                break
            url = rule.target_resource.get("resource", "")
            try:
                body = base64.b64decode(request.get("body") or "")
                async with httpx.AsyncClient(timeout=self.timeout) as client:
                    response = await client.request(
                        str(request.get("method") or "GET"),
                        url + (f"?{request['query']}" if request.get("query") else ""),
                        content=body,
                        headers={
                            k: v for k, v in (request.get("header") or {}).items() if k.lower() not in HOP_HEADERS
                        },
                    )
                content = response.content
                if len(content) > MAX_MESSAGE_BYTES:
                    answer = {"code": 413, "header": {}, "body": ""}
                    self._count(rule, False, f"{url}: response over {MAX_MESSAGE_BYTES} bytes")
                else:
                    answer = {
                        "code": response.status_code,
                        "header": {k: v for k, v in response.headers.items() if k.lower() not in HOP_HEADERS},
                        "body": base64.b64encode(content).decode(),
                    }
                    self._count(rule, response.status_code < 500)
            except httpx.HTTPError as exc:
                answer = {"code": 502, "header": {}, "body": base64.b64encode(str(exc).encode()).decode()}
                self._count(rule, False, f"{url}: {type(exc).__name__}: {exc}")
            break
        reply = message.reply(answer, source="router_servicebus")
        reply.resource = f"node/{node}/servicebus{path}"
        if ctx.bus.has_module("cloudhub"):
            await ctx.send("cloudhub", reply)


def _forwardable(headers: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in headers.items() if str(k).lower() not in HOP_HEADERS}


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in raw if k.decode("latin-1").lower() not in HOP_HEADERS}


def _header_list(headers: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    return [
        (str(k).lower().encode("latin-1"), str(v).encode("latin-1"))
        for k, v in headers.items()
        if str(k).lower() not in HOP_HEADERS
    ]


def _json(status: int, obj: Any) -> Response:
    import json

    return status, [(b"content-type", b"application/json")], json.dumps(obj).encode()

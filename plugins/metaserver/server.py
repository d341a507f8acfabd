"""The MetaServer: a raw ASGI app under hypercorn, serving list/get/watch from metamanager's store."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import parse_qs

import trio

from kubeedge import BaseModule, Context, Message
from kubeedge.plugins.common.asgi import serve_lifespan

log = logging.getLogger("kubeedge.metaserver")

# plural (URL) -> (kind in metamanager's resources, Kind of the objects)
RESOURCES: dict[str, tuple[str, str]] = {
    "pods": ("pod", "Pod"),
    "configmaps": ("configmap", "ConfigMap"),
    "secrets": ("secret", "Secret"),
    "services": ("service", "Service"),
    "endpoints": ("endpoints", "Endpoints"),
    "nodes": ("node", "Node"),
}
CLUSTER_SCOPED = {"nodes"}
WATCH_BUFFER = 256

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def resource_version(obj: dict[str, Any]) -> int:
    value = str((obj.get("metadata") or {}).get("resourceVersion", "0"))
    return int(value) if value.isdigit() else 0


def matches_labels(obj: dict[str, Any], selector: str) -> bool:
    """Equality-based label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a`` (exists), ``!a``."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def matches_fields(obj: dict[str, Any], selector: str) -> bool:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    fields = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "spec.nodeName": spec.get("nodeName"),
    }
    for term in filter(None, (t.strip() for t in selector.split(","))):
        negate = "!=" in term
        key, value = term.replace("!=", "=").replace("==", "=").split("=", 1)
        if (str(fields.get(key.strip()) or "") == value.strip()) == negate:
            return False
    return True


@dataclass(eq=False)
class Watcher:
    plural: str
    namespace: str
    labels: str
    fields: str
    send: trio.MemorySendChannel[dict[str, Any]]

    def wants(self, plural: str, obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        return (
            plural == self.plural
            and (not self.namespace or meta.get("namespace") == self.namespace)
            and matches_labels(obj, self.labels)
            and matches_fields(obj, self.fields)
        )


class MetaServer(BaseModule):
    name = "metaserver"
    group = "metaserver"
    after = ("metamanager",)

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.port: int | None = None
        self.watchers: set[Watcher] = set()
        self._ctx: Context | None = None

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        import hypercorn.trio
        from hypercorn.config import Config

        self._ctx = ctx
        config = Config()
        config.bind = [f"{self.config.get('address', '127.0.0.1')}:{self.config.get('port', 10550)}"]
        config.graceful_timeout = 1.0
        config.accesslog = None
        config.errorlog = None
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            app: Any = self.app  # a raw ASGI callable; hypercorn's own scope types are narrower
            binds = await nursery.start(partial(hypercorn.trio.serve, app, config, shutdown_trigger=stop.wait))
            self.port = int(binds[0].rsplit(":", 1)[1])
            log.info("metaserver: serving the local store on %s", binds[0])
            task_status.started()
            try:
                async for message in ctx.bus.channel(self.name):
                    self.publish(message)
            finally:
                for watcher in list(self.watchers):
                    watcher.send.close()
                stop.set()

    # -- changes from metamanager ---------------------------------------------------------------------

    def publish(self, message: Message) -> None:
        parts = message.resource.split("/")
        kind = parts[1] if len(parts) >= 2 else ""
        plural = next((p for p, (k, _) in RESOURCES.items() if k == kind), None)
        if plural is None or not isinstance(message.content, dict):
            return
        event = {"insert": "ADDED", "update": "MODIFIED", "delete": "DELETED"}.get(message.operation)
        if event is None:
            return
        obj = self._typed(plural, message.content)
        for watcher in list(self.watchers):
            if watcher.wants(plural, obj):
                try:
                    watcher.send.send_nowait({"type": event, "object": obj})
                except trio.WouldBlock:
                    # A watcher that does not keep up is closed, as the API server does; it relists.
                    log.info("metaserver: closing a watch of %s that fell %d events behind", plural, WATCH_BUFFER)
                    watcher.send.close()
                    self.watchers.discard(watcher)
                except trio.ClosedResourceError:
                    self.watchers.discard(watcher)

    @staticmethod
    def _typed(plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": RESOURCES[plural][1], **obj}

    async def _list(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        assert self._ctx is not None
        kind = RESOURCES[plural][0]
        request = Message(source=self.name, group="meta", operation="query", resource=f"{namespace or '*'}/{kind}")
        reply = await self._ctx.send_sync("metamanager", request, timeout=10)
        if reply.operation == "error":
            raise RuntimeError(str(reply.content))
        return [self._typed(plural, o) for o in reply.content or [] if isinstance(o, dict)]

    # -- HTTP ------------------------------------------------------------------------------------------

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            await self._route(scope, receive, send)
        except Exception as exc:  # one bad request never takes the server down
            log.exception("metaserver: %s %s failed", scope.get("method"), scope.get("path"))
            await self._json(send, 500, status(500, "InternalError", str(exc)))

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"].rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        if path in ("/healthz", "/livez", "/readyz"):
            await self._text(send, 200, "ok")
            return
        if path == "/version":
            await self._json(send, 200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-kubeedge-metaserver"})
            return
        if path == "/api":
            await self._json(send, 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
            return
        if path == "/apis":
            await self._json(send, 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
            return
        if path == "/api/v1":
            resources = [
                {
                    "name": p,
                    "singularName": k,
                    "namespaced": p not in CLUSTER_SCOPED,
                    "kind": kind,
                    "verbs": ["get", "list", "watch"],
                }
                for p, (k, kind) in RESOURCES.items()
            ]
            await self._json(send, 200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": resources})
            return
        parts = path.split("/")[3:]  # after /api/v1
        namespace = ""
        if len(parts) >= 3 and parts[0] == "namespaces":
            namespace, parts = parts[1], parts[2:]
        if not path.startswith("/api/v1/") or not parts or parts[0] not in RESOURCES or len(parts) > 2:
            await self._json(send, 404, status(404, "NotFound", f"the server could not find {path}"))
            return
        if scope["method"] != "GET":
            await self._json(
                send,
                405,
                status(405, "MethodNotAllowed", "the edge's MetaServer is read-only; write through the cloud"),
            )
            return
        plural = parts[0]
        if len(parts) == 2:
            await self._get(send, plural, namespace, parts[1])
        elif query.get("watch") in ("true", "1"):
            await self._watch(scope, receive, send, plural, namespace, query)
        else:
            await self._list_response(send, plural, namespace, query)

    async def _get(self, send: Send, plural: str, namespace: str, name: str) -> None:
        for obj in await self._list(plural, namespace):
            if (obj.get("metadata") or {}).get("name") == name:
                await self._json(send, 200, obj)
                return
        await self._json(send, 404, status(404, "NotFound", f'{plural} "{name}" not found'))

    async def _list_response(self, send: Send, plural: str, namespace: str, query: dict[str, str]) -> None:
        items = [
            o
            for o in await self._list(plural, namespace)
            if matches_labels(o, query.get("labelSelector", "")) and matches_fields(o, query.get("fieldSelector", ""))
        ]
        version = max((resource_version(o) for o in items), default=0)
        await self._json(
            send,
            200,
            {
                "kind": f"{RESOURCES[plural][1]}List",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(version)},
                "items": items,
            },
        )

    async def _watch(
        self, scope: Scope, receive: Receive, send: Send, plural: str, namespace: str, query: dict[str, str]
    ) -> None:
        since = int(query["resourceVersion"]) if query.get("resourceVersion", "").isdigit() else 0
        sender, events = trio.open_memory_channel[dict[str, Any]](WATCH_BUFFER)
        watcher = Watcher(plural, namespace, query.get("labelSelector", ""), query.get("fieldSelector", ""), sender)
        self.watchers.add(watcher)
        timeout = float(query.get("timeoutSeconds", "1800"))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
            }
        )
        try:
            # Objects newer than the client's resourceVersion (all of them without one) come first as ADDED.
            for obj in await self._list(plural, namespace):
                if resource_version(obj) > since and watcher.wants(plural, obj):
                    await send(
                        {
                            "type": "http.response.body",
                            "body": _line({"type": "ADDED", "object": obj}),
                            "more_body": True,
                        }
                    )
            async with trio.open_nursery() as nursery:

                async def client_gone() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(client_gone)
                with trio.move_on_after(timeout):
                    async for event in events:
                        await send({"type": "http.response.body", "body": _line(event), "more_body": True})
                nursery.cancel_scope.cancel()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.watchers.discard(watcher)
            sender.close()

    @staticmethod
    async def _json(send: Send, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": code,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": data})

    @staticmethod
    async def _text(send: Send, code: int, text: str) -> None:
        await send({"type": "http.response.start", "status": code, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": text.encode()})


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode() + b"\n"

"""The HTTP face of the embedded API: a raw ASGI app served by hypercorn under trio.

Routes: health (``/healthz``, ``/readyz``, ``/livez``), ``/version``, discovery (``/api``, ``/api/v1``,
``/apis``, ``/apis/<g>``, ``/apis/<g>/<v>``), OpenAPI v3 stubs (enough for ``kubectl apply`` to trust
server-side validation), and the resource paths with their ``status``, ``scale`` and ``binding``
subresources. Everything but health and version needs the bearer token; errors are ``Status`` objects.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import trio
import yaml

from kubeedge.plugins.common.asgi import serve_lifespan

from .resources import Registry, ResourceType
from .selectors import SelectorError, parse_field_selector, parse_label_selector
from .service import ApiError, ApiService, status_body
from .store import Event, Gone, Store
from .tables import to_table

__all__ = ["ApiApp"]

log = logging.getLogger("kubeedge.apiserver")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON = b"application/json"
VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-kubeedge-python",
    "gitCommit": "",
    "gitTreeState": "clean",
    "buildDate": "2026-11-21T00:00:00Z",
    "goVersion": "python",
    "compiler": "cpython",
    "platform": "linux/amd64",
}


class Request:
    def __init__(self, scope: dict[str, Any], body: bytes) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query = {
            k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode(), keep_blank_values=True).items()
        }
        self.headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        self.body = body

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("true", "1")

    def json(self) -> Any:
        if not self.body:
            return None
        content_type = self.headers.get("content-type", "")
        if "protobuf" in content_type:
            from .protobuf import ProtobufError, decode_object

            try:
                return decode_object(self.body)
            except (ProtobufError, UnicodeDecodeError) as exc:
                raise ApiError(415, f"cannot read this protobuf body: {exc}", "UnsupportedMediaType") from None
        if "cbor" in content_type:
            raise ApiError(
                415,
                f"the body of the request was in an unsupported format: {content_type}; use JSON",
                "UnsupportedMediaType",
            )
        try:
            if "yaml" in content_type:
                return yaml.safe_load(self.body)
            return json.loads(self.body)
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError(
                400, f"the request body is not valid {'YAML' if 'yaml' in content_type else 'JSON'}: {exc}"
            ) from None

    @property
    def wants_table(self) -> bool:
        return "as=Table" in self.headers.get("accept", "")

    @property
    def field_validation(self) -> str:
        return self.query.get("fieldValidation") or "Warn"

    @property
    def dry_run(self) -> bool:
        return self.query.get("dryRun") == "All"


class ApiApp:
    def __init__(self, service: ApiService, registry: Registry, token: str, *, bookmark_interval: float = 30.0) -> None:
        self.service = service
        self.store: Store = service.store
        self.registry = registry
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.stopping = trio.Event()
        self.requests = 0

    # -- ASGI -----------------------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] in ("http", "websocket") and "/pods/" in scope.get("path", ""):
            # Pod log/exec/attach go to the node's kubelet API (cloudstream's tunnel): see stream.py.
            from . import stream

            if await stream.handle(self, scope, receive, send):
                return
        if scope["type"] != "http":
            return
        self.requests += 1
        body = b""
        if scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
        request = Request(scope, body)
        try:
            await self.route(request, receive, send)
        except ApiError as exc:
            await self.respond(send, exc.code, exc.status())
        except Exception as exc:
            log.exception("apiserver: %s %s failed", request.method, request.path)
            await self.respond(send, 500, status_body(500, f"internal error: {type(exc).__name__}: {exc}"))

    async def respond(self, send: Send, code: int, body: Any, warnings: list[str] | None = None) -> None:
        if isinstance(body, bytes | str):
            payload = body.encode() if isinstance(body, str) else body
            content_type = b"text/plain; charset=utf-8"
        else:
            payload = json.dumps(body, separators=(",", ":")).encode()
            content_type = JSON
        headers = [(b"content-type", content_type), (b"content-length", str(len(payload)).encode())]
        for warning in warnings or []:
            headers.append((b"warning", f'299 - "{warning}"'.replace('""', '"').encode()))
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    # -- routing --------------------------------------------------------------------------------------------

    def authenticated(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.token.encode())

    async def route(self, request: Request, receive: Receive, send: Send) -> None:
        path = request.path.rstrip("/") or "/"
        if path in ("/healthz", "/readyz", "/livez") or path.startswith(("/healthz/", "/readyz/", "/livez/")):
            await self.respond(send, 200, "ok")
            return
        if path == "/version":
            await self.respond(send, 200, VERSION)
            return
        if not self.authenticated(request):
            raise ApiError(401, "Unauthorized")
        parts = [p for p in path.split("/") if p]
        if not parts:
            paths = ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/openapi/v3", "/readyz", "/version"]
            await self.respond(send, 200, {"paths": paths})
            return
        if parts[0] == "api":
            if len(parts) == 1:
                await self.respond(
                    send,
                    200,
                    {
                        "kind": "APIVersions",
                        "versions": ["v1"],
                        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
                    },
                )
                return
            await self.api_path(request, "", parts[1], parts[2:], receive, send)
            return
        if parts[0] == "apis":
            if len(parts) == 1:
                await self.respond(send, 200, self.group_list())
                return
            if len(parts) == 2:
                group = self.group_doc(parts[1])
                if group is None:
                    raise ApiError(404, "the server could not find the requested resource")
                await self.respond(send, 200, group)
                return
            await self.api_path(request, parts[1], parts[2], parts[3:], receive, send)
            return
        if parts[0] == "openapi":
            await self.openapi(parts[1:], send)
            return
        raise ApiError(404, "the server could not find the requested resource")

    def group_doc(self, name: str) -> dict[str, Any] | None:
        versions = self.registry.groups().get(name)
        if not versions or not name:
            return None
        entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": name,
            "versions": entries,
            "preferredVersion": entries[0],
        }

    def group_list(self) -> dict[str, Any]:
        groups = [self.group_doc(name) for name in self.registry.groups() if name]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [g for g in groups if g]}

    async def openapi(self, parts: list[str], send: Send) -> None:
        if parts[:1] != ["v3"]:
            raise ApiError(404, "the server could not find the requested resource")
        group_versions = [("", "v1")] + [(g, v) for g, vs in self.registry.groups().items() if g for v in vs]
        if len(parts) == 1:
            index: dict[str, Any] = {}
            for group, version in group_versions:
                key = f"apis/{group}/{version}" if group else f"api/{version}"
                index[key] = {"serverRelativeURL": f"/openapi/v3/{key}"}
            await self.respond(send, 200, {"paths": index})
            return
        rest = parts[1:]
        if rest[:1] == ["api"] and len(rest) == 2:
            group, version = "", rest[1]
        elif rest[:1] == ["apis"] and len(rest) == 3:
            group, version = rest[1], rest[2]
        else:
            raise ApiError(404, "the server could not find the requested resource")
        if (group, version) not in group_versions:
            raise ApiError(404, "the server could not find the requested resource")
        prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
        paths: dict[str, Any] = {}
        for rtype in self.registry.types:
            if rtype.group != group or version not in rtype.versions:
                continue
            item = (
                f"{prefix}/namespaces/{{namespace}}/{rtype.plural}/{{name}}"
                if rtype.namespaced
                else (f"{prefix}/{rtype.plural}/{{name}}")
            )
            gvk = {"group": group, "version": version, "kind": rtype.kind}
            operation: dict[str, Any] = {
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "OK"}},
            }
            paths[item] = {
                "get": dict(operation),
                "put": dict(operation),
                "patch": dict(operation),
                "delete": dict(operation),
            }
        await self.respond(
            send,
            200,
            {
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": VERSION["gitVersion"]},
                "paths": paths,
                "components": {"schemas": {}},
            },
        )

    # -- resources ------------------------------------------------------------------------------------------

    async def api_path(
        self, request: Request, group: str, version: str, rest: list[str], receive: Receive, send: Send
    ) -> None:
        if not rest:
            resources = self.registry.resource_list(group, version)
            if resources is None:
                raise ApiError(404, "the server could not find the requested resource")
            await self.respond(send, 200, resources)
            return
        if group == "metrics.k8s.io" or (not group and len(rest) >= 3 and rest[0] == "nodes" and rest[2] == "proxy"):
            from . import metricsapi  # kubectl top and the node proxy: the nodes' stats through cloudstream

            if group:
                await metricsapi.serve(self, request, version, rest, send)
            else:
                await metricsapi.node_proxy(self, request, rest[1], rest[3:], send)
            return
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
            namespace, rest = rest[1], rest[2:]
        plural, name, sub = rest[0], (rest[1] if len(rest) > 1 else ""), (rest[2] if len(rest) > 2 else "")
        if len(rest) > 3:
            raise ApiError(404, "the server could not find the requested resource")
        rtype = self.registry.lookup(group, version, plural)
        if rtype is None or (namespace is not None and not rtype.namespaced):
            raise ApiError(404, "the server could not find the requested resource")
        if sub and sub not in rtype.subresources:
            raise ApiError(404, "the server could not find the requested resource")
        method = request.method
        ns = namespace or ""
        if method == "GET":
            if not name:
                if request.flag("watch"):
                    await self.watch(request, rtype, version, namespace, receive, send)
                else:
                    await self.list_objects(request, rtype, version, namespace, send)
                return
            obj = self.service.get(rtype, ns, name)
            if sub == "scale":
                await self.respond(send, 200, _scale(obj))
                return
            await self.send_object(request, send, 200, rtype, version, obj)
            return
        if method == "POST":
            if name and sub == "binding":
                await self.bind(request, rtype, ns, name, send)
                return
            if name:
                raise ApiError(405, f"POST is not supported on {rtype.plural}/{name}", "MethodNotAllowed")
            if rtype.namespaced and namespace is None:
                raise ApiError(405, f"create {rtype.plural} needs a namespace in the path", "MethodNotAllowed")
            obj, warnings = await self.service.create(
                rtype,
                version,
                namespace,
                request.json(),
                field_validation=request.field_validation,
                dry_run=request.dry_run,
            )
            await self.send_object(request, send, 201, rtype, version, obj, warnings)
            return
        if method in ("PUT", "PATCH"):
            if not name:
                raise ApiError(405, f"{method} needs an object name", "MethodNotAllowed")
            body = request.json()
            if sub == "scale":
                obj, warnings = await self.scale(request, rtype, version, ns, name, body)
                await self.respond(send, 200, _scale(obj), warnings)
                return
            if method == "PUT":
                obj, warnings = await self.service.update(
                    rtype,
                    version,
                    ns,
                    name,
                    body,
                    subresource=sub,
                    field_validation=request.field_validation,
                    dry_run=request.dry_run,
                )
                await self.send_object(request, send, 200, rtype, version, obj, warnings)
                return
            obj, warnings, created = await self.service.patch(
                rtype,
                version,
                ns,
                name,
                request.headers.get("content-type", "application/merge-patch+json"),
                body,
                subresource=sub,
                field_validation=request.field_validation,
                dry_run=request.dry_run,
            )
            await self.send_object(request, send, 201 if created else 200, rtype, version, obj, warnings)
            return
        if method == "DELETE":
            options = request.json() if request.body else {}
            if request.query.get("propagationPolicy"):
                options = {**(options or {}), "propagationPolicy": request.query["propagationPolicy"]}
            if not name:
                items = self.select(request, rtype, namespace)
                for item in items:
                    await self.service.delete(
                        rtype,
                        item["metadata"].get("namespace", ""),
                        item["metadata"]["name"],
                        options,
                        dry_run=request.dry_run,
                    )
                await self.respond(send, 200, self.list_body(rtype, version, items))
                return
            obj = await self.service.delete(
                rtype, ns, name, options if isinstance(options, dict) else {}, dry_run=request.dry_run
            )
            await self.send_object(request, send, 200, rtype, version, obj)
            return
        raise ApiError(405, f"method {method} is not allowed", "MethodNotAllowed")

    async def send_object(
        self,
        request: Request,
        send: Send,
        code: int,
        rtype: ResourceType,
        version: str,
        obj: dict[str, Any],
        warnings: list[str] | None = None,
    ) -> None:
        obj = _versioned(obj, rtype, version)
        if request.wants_table and request.method == "GET":
            body = to_table(
                rtype,
                version,
                [obj],
                resource_version=obj["metadata"].get("resourceVersion", ""),
                include=request.query.get("includeObject", "Metadata"),
            )
            await self.respond(send, code, body, warnings)
            return
        await self.respond(send, code, obj, warnings)

    def select(self, request: Request, rtype: ResourceType, namespace: str | None) -> list[dict[str, Any]]:
        try:
            labels = parse_label_selector(request.query.get("labelSelector"))
            fields = parse_field_selector(request.query.get("fieldSelector"))
        except SelectorError as exc:
            raise ApiError(400, str(exc)) from None
        items = self.store.list(rtype.key, namespace if rtype.namespaced else None)
        if labels is not None:
            items = [i for i in items if labels(i)]
        if fields is not None:
            items = [i for i in items if fields(i)]
        return items

    def list_body(
        self, rtype: ResourceType, version: str, items: list[dict[str, Any]], cont: str = "", remaining: int = 0
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        if cont:
            metadata["continue"] = cont
            metadata["remainingItemCount"] = remaining
        return {
            "kind": f"{rtype.kind}List",
            "apiVersion": rtype.api_version(version),
            "metadata": metadata,
            "items": [_versioned(i, rtype, version) for i in items],
        }

    async def list_objects(
        self, request: Request, rtype: ResourceType, version: str, namespace: str | None, send: Send
    ) -> None:
        items = self.select(request, rtype, namespace)
        start = 0
        token = request.query.get("continue")
        if token:
            try:
                state = json.loads(base64.urlsafe_b64decode(token.encode()))
                start = int(state["start"])
            except (ValueError, KeyError, TypeError):
                raise ApiError(400, "invalid continue token") from None
        limit = int(request.query.get("limit") or 0)
        cont = ""
        remaining = 0
        if limit > 0 and start + limit < len(items):
            cont = base64.urlsafe_b64encode(json.dumps({"start": start + limit, "rv": self.store.rv}).encode()).decode()
            remaining = len(items) - start - limit
            items = items[start : start + limit]
        else:
            items = items[start:]
        if request.wants_table:
            body = to_table(
                rtype,
                version,
                [_versioned(i, rtype, version) for i in items],
                resource_version=str(self.store.rv),
                include=request.query.get("includeObject", "Metadata"),
                continue_token=cont,
            )
        else:
            body = self.list_body(rtype, version, items, cont, remaining)
        await self.respond(send, 200, body)

    async def bind(self, request: Request, rtype: ResourceType, namespace: str, name: str, send: Send) -> None:
        binding = request.json() or {}
        target = (binding.get("target") or {}).get("name")
        if not target:
            raise ApiError(422, "Binding target name is required", "Invalid")
        pod = self.service.get(rtype, namespace, name)
        if (pod.get("spec") or {}).get("nodeName"):
            raise ApiError(409, f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"', "Conflict")
        await self.service.patch(
            rtype, "v1", namespace, name, "application/merge-patch+json", {"spec": {"nodeName": target}}
        )
        await self.respond(send, 201, status_body(201, "", ""))

    async def scale(
        self, request: Request, rtype: ResourceType, version: str, namespace: str, name: str, body: Any
    ) -> tuple[dict[str, Any], list[str]]:
        if request.method == "PUT":
            replicas = ((body or {}).get("spec") or {}).get("replicas")
        else:
            current = _scale(self.service.get(rtype, namespace, name))
            from .patch import json_patch, merge_patch

            content_type = request.headers.get("content-type", "")
            patched = json_patch(current, body) if "json-patch" in content_type else merge_patch(current, body)
            replicas = (patched.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(
                422, f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: {replicas!r}', "Invalid"
            )
        obj, warnings, _ = await self.service.patch(
            rtype, version, namespace, name, "application/merge-patch+json", {"spec": {"replicas": replicas}}
        )
        return obj, warnings

    # -- watch ----------------------------------------------------------------------------------------------

    async def watch(
        self, request: Request, rtype: ResourceType, version: str, namespace: str | None, receive: Receive, send: Send
    ) -> None:
        try:
            predicates = [
                p
                for p in (
                    parse_label_selector(request.query.get("labelSelector")),
                    parse_field_selector(request.query.get("fieldSelector")),
                )
                if p is not None
            ]
        except SelectorError as exc:
            raise ApiError(400, str(exc)) from None
        raw_rv = request.query.get("resourceVersion", "")
        bookmarks = request.flag("allowWatchBookmarks")
        table = request.wants_table
        include = request.query.get("includeObject", "Metadata")
        ns = namespace if rtype.namespaced else None
        initial: list[dict[str, Any]] = []
        gone: Gone | None = None
        watcher = None
        # A "watch-list" (sendInitialEvents=true, client-go's WatchListClient) gets the current objects as
        # ADDED events, then a bookmark marking the end of them.
        send_initial = request.query.get("sendInitialEvents") == "true"
        if raw_rv in ("", "0") or send_initial:
            start = self.store.rv
            initial = self.select(request, rtype, namespace)
            watcher = self.store.watch([rtype.key], ns, start, predicates)
        else:
            try:
                start = int(raw_rv)
            except ValueError:
                raise ApiError(400, f"invalid resourceVersion {raw_rv!r}") from None
            try:
                watcher = self.store.watch([rtype.key], ns, start, predicates)
            except Gone as exc:
                gone = exc
        headers = [(b"content-type", JSON), (b"cache-control", b"no-cache, private")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        def encode(kind: str, obj: dict[str, Any]) -> bytes:
            if table and kind != "BOOKMARK" and kind != "ERROR":
                obj = to_table(
                    rtype, version, [obj], resource_version=obj["metadata"].get("resourceVersion", ""), include=include
                )
            return json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"

        def encode_event(event: Event) -> bytes:
            if table:
                return encode(event.type, _versioned(event.obj, rtype, version))
            cache_key = (event.type, rtype.api_version(version))
            line = event.encoded.get(cache_key)
            if line is None:
                line = event.encoded[cache_key] = encode(event.type, _versioned(event.obj, rtype, version))
            return line

        if gone is not None:
            error = status_body(410, str(gone), "Expired")
            await send({"type": "http.response.body", "body": encode("ERROR", error), "more_body": False})
            return
        assert watcher is not None
        timeout = float(request.query.get("timeoutSeconds") or 0) or 1800.0
        try:
            async with trio.open_nursery() as nursery:

                async def until_disconnect() -> None:
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            nursery.cancel_scope.cancel()
                            return

                async def until_stopping() -> None:
                    await self.stopping.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(until_disconnect)
                nursery.start_soon(until_stopping)
                with trio.move_on_after(timeout):
                    for obj in initial:
                        await send(
                            {
                                "type": "http.response.body",
                                "body": encode("ADDED", _versioned(obj, rtype, version)),
                                "more_body": True,
                            }
                        )
                    if send_initial:
                        end = {
                            "kind": rtype.kind,
                            "apiVersion": rtype.api_version(version),
                            "metadata": {
                                "resourceVersion": str(start),
                                "annotations": {"k8s.io/initial-events-end": "true"},
                            },
                        }
                        await send({"type": "http.response.body", "body": encode("BOOKMARK", end), "more_body": True})
                    while True:
                        event = None
                        with trio.move_on_after(self.bookmark_interval if bookmarks else 3600):
                            try:
                                event = await watcher.receive.receive()
                            except trio.EndOfChannel:
                                break
                        if event is None:
                            bookmark = {
                                "kind": rtype.kind,
                                "apiVersion": rtype.api_version(version),
                                "metadata": {"resourceVersion": str(self.store.published_rv)},
                            }
                            await send(
                                {"type": "http.response.body", "body": encode("BOOKMARK", bookmark), "more_body": True}
                            )
                            continue
                        await send(
                            {
                                "type": "http.response.body",
                                "body": encode_event(event),
                                "more_body": True,
                            }
                        )
                nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                except Exception:  # the client went away first: nothing left to tell it
                    log.debug("apiserver: watch client left before the end of its stream")
        finally:
            self.store.unwatch(watcher)


def _versioned(obj: dict[str, Any], rtype: ResourceType, version: str) -> dict[str, Any]:
    api_version = rtype.api_version(version)
    if obj.get("apiVersion") == api_version and obj.get("kind") == rtype.kind:
        return obj
    return {**obj, "apiVersion": api_version, "kind": rtype.kind}


def _scale(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta
        },
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in selector.items()),
        },
    }

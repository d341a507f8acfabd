"""Pod ``log``, ``exec`` and ``attach`` for the embedded API server, served through cloudstream.

Written by the stream work (plugins/cloudstream, plugins/edgestream); the router calls :func:`handle` for
``/api/v1/namespaces/{ns}/pods/{name}/{log,exec,attach}`` and nothing else here touches the API server.
As a real API server does with a kubelet, it resolves the pod's node from the stored pod and calls the
kubelet API of that node, which for edge nodes is cloudstream's (it answers through the node's tunnel):

- the endpoint is cloudstream's ``streamPort`` on 127.0.0.1, read from ``<data-dir>/cloudstream.json``
  (cloudstream writes it when it serves; the data dir is the one the API's database lives in), with the
  client certificate cloudstream issued for this (``pki/stream-client.{crt,key}``) and the cloud CA;
- the node is named in the ``X-Kubeedge-Node`` header;
- ``log`` is relayed as a streamed ``text/plain`` body, ``exec``/``attach`` websocket messages
  (``v5.channel.k8s.io``, ``v4.channel.k8s.io``) both ways verbatim, so the exit status on channel 3 is
  kubelet's; exec/attach upgraded to SPDY/3.1 are relayed as raw bytes by spdy.py (before hypercorn).
  Errors are ``Status`` objects: 404 for an unknown pod, 400 for a pod without a node or a bad container,
  503 naming the node when it is offline or cloudstream is not running.
"""

from __future__ import annotations

import hmac
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import trio

__all__ = ["handle"]

log = logging.getLogger("kubeedge.apiserver.stream")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

SUBRESOURCES = ("log", "exec", "attach")
LOG_PARAMS = ("follow", "tailLines", "previous", "timestamps", "sinceSeconds", "limitBytes")


class StreamError(Exception):
    def __init__(self, code: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason


_REASONS = {400: "BadRequest", 401: "Unauthorized", 404: "NotFound", 500: "InternalError", 503: "ServiceUnavailable"}


def _status(code: int, message: str, reason: str = "", details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, "Unknown"),
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def _match(path: str) -> tuple[str, str, str] | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) == 7 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods" and parts[6] in SUBRESOURCES:
        return parts[3], parts[5], parts[6]
    return None


async def handle(app: Any, scope: dict[str, Any], receive: Receive, send: Send) -> bool:
    """Serve the request if it is a pod's log/exec/attach; False (nothing sent) when it is not."""
    matched = _match(scope.get("path", ""))
    if matched is None or scope["type"] not in ("http", "websocket"):
        return False
    namespace, name, sub = matched
    try:
        if not _authenticated(app, scope):
            raise StreamError(401, "Unauthorized")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        if scope["type"] == "http" and scope.get("method") not in ("GET", "POST"):
            raise StreamError(405, f"{scope.get('method')} is not allowed on pods/{sub}", "MethodNotAllowed")
        node, container, endpoint = _target(app, namespace, name, query)
        if sub == "log":
            if scope["type"] != "http":
                raise StreamError(400, "pods/log is plain HTTP, not a websocket")
            await _logs(endpoint, node, namespace, name, container, query, receive, send)
        elif scope["type"] != "websocket":
            # a plain request, neither websocket nor SPDY (SPDY upgrades never get here: the front in
            # spdy.py takes them): the node's answer (offline, or which upgrade it needs) is what to show
            await _spdy(endpoint, node, sub, namespace, name, container, send)
        else:
            await _exec(endpoint, node, sub, namespace, name, container, scope, query, receive, send)
    except StreamError as exc:
        await _deny(scope, send, exc.code, _status(exc.code, exc.message, exc.reason))
    return True


def _authenticated(app: Any, scope: dict[str, Any]) -> bool:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), str(app.token).encode())


def _target(app: Any, namespace: str, name: str, query: dict[str, list[str]]) -> tuple[str, str, Endpoint]:
    """Where a pod's stream goes: its node, the container the query names (or the default one), and the
    kubelet API endpoint (cloudstream) to call."""
    pod = _pod(app, namespace, name)
    node = str((pod.get("spec") or {}).get("nodeName") or "")
    if not node:
        raise StreamError(400, f"pod {name} does not have a host assigned")
    container = _container(pod, name, (query.get("container") or [""])[-1])
    return node, container, _endpoint(app)


def _pod(app: Any, namespace: str, name: str) -> dict[str, Any]:
    rtype = app.registry.lookup("", "v1", "pods")
    pod = app.store.get(rtype.key, namespace, name) if rtype is not None else None
    if pod is None:
        raise StreamError(404, f'pods "{name}" not found', "NotFound")
    return dict(pod)


def _container(pod: dict[str, Any], name: str, wanted: str) -> str:
    spec = pod.get("spec") or {}
    names = [str(c.get("name")) for c in spec.get("containers") or []]
    every = names + [
        str(c.get("name")) for key in ("initContainers", "ephemeralContainers") for c in spec.get(key) or []
    ]
    if wanted:
        if wanted not in every:
            raise StreamError(400, f"container {wanted} is not valid for pod {name}")
        return wanted
    default = ((pod.get("metadata") or {}).get("annotations") or {}).get("kubectl.kubernetes.io/default-container")
    if default in names:
        return str(default)
    if len(names) == 1:
        return names[0]
    raise StreamError(400, f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]")


class Endpoint:
    def __init__(self, port: int, ssl_context: ssl.SSLContext) -> None:
        self.port = port
        self.ssl_context = ssl_context


_contexts: dict[tuple[str, str, str], ssl.SSLContext] = {}


def _endpoint(app: Any) -> Endpoint:
    data_dir = Path(app.store.db.path).parent
    state_file = data_dir / "cloudstream.json"
    try:
        state = json.loads(state_file.read_text())
        port = int(state["streamPort"])
        key = (str(state["ca"]), str(state["clientCert"]), str(state["clientKey"]))
    except (OSError, ValueError, KeyError, TypeError):
        raise StreamError(
            503, f"logs/exec need the cloudstream module: it is not running on this cloud (no {state_file})"
        ) from None
    context = _contexts.get(key)
    if context is None:
        context = ssl.create_default_context(cafile=key[0])
        context.load_cert_chain(key[1], key[2])
        _contexts[key] = context
    return Endpoint(port, context)


async def _logs(
    endpoint: Endpoint,
    node: str,
    namespace: str,
    name: str,
    container: str,
    query: dict[str, list[str]],
    receive: Receive,
    send: Send,
) -> None:
    import httpx

    params = {k: query[k][-1] for k in LOG_PARAMS if k in query}
    url = f"https://127.0.0.1:{endpoint.port}/containerLogs/{quote(namespace)}/{quote(name)}/{quote(container)}"
    async with httpx.AsyncClient(verify=endpoint.ssl_context, timeout=httpx.Timeout(30.0, read=None)) as client:
        try:
            async with client.stream("GET", url, params=params, headers={"x-kubeedge-node": node}) as reply:
                if reply.status_code != 200:
                    body = await reply.aread()
                    await _respond(send, reply.status_code, body, reply.headers.get("content-type", "application/json"))
                    return
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-type", b"text/plain"), (b"transfer-encoding", b"chunked")],
                    }
                )
                async with trio.open_nursery() as nursery:

                    async def until_disconnect() -> None:
                        while (await receive())["type"] != "http.disconnect":
                            pass
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(until_disconnect)
                    async for chunk in reply.aiter_raw():
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    nursery.cancel_scope.cancel()
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        except httpx.TransportError as exc:
            raise StreamError(503, f"cloudstream is not reachable on port {endpoint.port}: {exc!r}") from None


async def _spdy(endpoint: Endpoint, node: str, sub: str, namespace: str, name: str, container: str, send: Send) -> None:
    import httpx

    url = f"https://127.0.0.1:{endpoint.port}/{sub}/{quote(namespace)}/{quote(name)}/{quote(container)}"
    try:
        async with httpx.AsyncClient(verify=endpoint.ssl_context, timeout=30.0) as client:
            reply = await client.post(url, headers={"x-kubeedge-node": node})
    except httpx.TransportError as exc:
        raise StreamError(503, f"cloudstream is not reachable on port {endpoint.port}: {exc!r}") from None
    await _respond(send, reply.status_code, reply.content, reply.headers.get("content-type", "application/json"))


async def _exec(
    endpoint: Endpoint,
    node: str,
    sub: str,
    namespace: str,
    name: str,
    container: str,
    scope: dict[str, Any],
    query: dict[str, list[str]],
    receive: Receive,
    send: Send,
) -> None:
    from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, open_websocket_url

    first = await receive()
    if first["type"] != "websocket.connect":
        return
    params = [(k, v) for k, values in query.items() if k != "container" for v in values]
    url = (
        f"wss://127.0.0.1:{endpoint.port}/{sub}/{quote(namespace)}/{quote(name)}/{quote(container)}?{urlencode(params)}"
    )
    offered = list(scope.get("subprotocols") or [])
    try:
        async with open_websocket_url(
            url,
            ssl_context=endpoint.ssl_context,
            subprotocols=offered,
            extra_headers=[(b"x-kubeedge-node", node.encode())],
            connect_timeout=30,
            disconnect_timeout=2,
            max_message_size=4 * 1024 * 1024,
        ) as upstream:
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
            async with trio.open_nursery() as nursery:

                async def client_to_node() -> None:
                    while True:
                        message = await receive()
                        if message["type"] == "websocket.disconnect":
                            nursery.cancel_scope.cancel()
                            return
                        data = message.get("bytes")
                        if data is None:
                            data = (message.get("text") or "").encode()
                        try:
                            await upstream.send_message(data)
                        except ConnectionClosed:
                            return

                nursery.start_soon(client_to_node)
                try:
                    while True:
                        data = await upstream.get_message()
                        if isinstance(data, str):
                            data = data.encode()
                        await send({"type": "websocket.send", "bytes": data})
                except ConnectionClosed:
                    pass
                nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await send({"type": "websocket.close", "code": 1000})
    except ConnectionRejected as exc:
        body = bytes(exc.body or b"") or json.dumps(_status(exc.status_code, f"cloudstream refused: {exc}")).encode()
        await _deny_raw(scope, send, exc.status_code, body)
    except (HandshakeError, OSError, trio.BrokenResourceError) as exc:
        raise StreamError(503, f"cloudstream is not reachable on port {endpoint.port}: {exc!r}") from None


async def _respond(send: Send, code: int, body: bytes, content_type: str = "application/json") -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _deny(scope: dict[str, Any], send: Send, code: int, status: dict[str, Any]) -> None:
    await _deny_raw(scope, send, code, json.dumps(status).encode())


async def _deny_raw(scope: dict[str, Any], send: Send, code: int, body: bytes) -> None:
    if scope["type"] == "http":
        await _respond(send, code, body)
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send({"type": "websocket.http.response.start", "status": code, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1011})

"""cloudhub's HTTPS bootstrap server (:10002, hypercorn): ``GET /ca.crt`` and ``GET /edge.crt``.

``/edge.crt`` signs the CSR in the request body (PEM or DER; edgecore sends DER in a GET body) when the
``Authorization: Bearer <jwt>`` token verifies against this cloud's CA and the CSR's CN is
``system:node:<NodeName>``. Refusals carry a one-line reason: 401 (token), 400 (request), 403 (identity),
409 (a node of that name is connected). With ``testIngress`` on, ``POST /test/send`` puts a message on the
hub's bus channel as if a controller had sent it (loopback callers only; for tests driving a real process).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from kubeedge import Message, MessageError
from kubeedge.plugins.common import pki
from kubeedge.plugins.common.asgi import read_body, serve_lifespan

if TYPE_CHECKING:
    from .hub import CloudHub

log = logging.getLogger("kubeedge.cloudhub.bootstrap")

MAX_BODY = 64 * 1024


class HttpError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def make_app(hub: CloudHub) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        client = scope.get("client") or ("?", 0)
        try:
            body = await _read_body(scope, receive)
            status, content_type, payload = await _route(hub, scope["method"], scope["path"], headers, body, client)
        except HttpError as exc:
            log.warning(
                "%s %s from %s (node %s) refused (%d): %s",
                scope["method"],
                scope["path"],
                client[0],
                headers.get("nodename", "-"),
                exc.status,
                exc.reason,
            )
            status, content_type, payload = exc.status, "text/plain; charset=utf-8", (exc.reason + "\n").encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


async def _read_body(scope: dict[str, Any], receive: Any) -> bytes:
    body = await read_body(scope, receive, MAX_BODY)
    if body is None:
        raise HttpError(413, f"request body over {MAX_BODY} bytes")
    return body


async def _route(
    hub: CloudHub, method: str, path: str, headers: dict[str, str], body: bytes, client: Any
) -> tuple[int, str, bytes]:
    assert hub.ca is not None
    if path == "/ca.crt" and method == "GET":
        return 200, "application/octet-stream", hub.ca.der
    if path == "/edge.crt" and method == "GET":
        return 200, "application/octet-stream", _sign(hub, headers, body)
    if path == "/test/send" and method == "POST" and hub.test_ingress:
        if client[0] not in ("127.0.0.1", "::1"):
            raise HttpError(403, "the test ingress serves loopback callers only")
        try:
            message = Message.from_json(body)
        except MessageError as exc:
            raise HttpError(400, f"not a message: {exc}") from None
        assert hub._ctx is not None
        await hub._ctx.send(hub.name, message)
        return 202, "text/plain", b"queued\n"
    raise HttpError(404, f"no route {method} {path}")


def _sign(hub: CloudHub, headers: dict[str, str], body: bytes) -> bytes:
    assert hub.ca is not None
    auth = headers.get("authorization", "")
    if not auth.lower().startswith("bearer ") or not auth[7:].strip():
        raise HttpError(401, "missing bearer token (Authorization: Bearer <token>)")
    try:
        pki.verify_token(hub.ca, auth[7:].strip())
    except pki.TokenError as exc:
        raise HttpError(401, str(exc)) from None
    node = headers.get("nodename", "").strip()
    if not node:
        raise HttpError(400, "missing NodeName header")
    try:
        csr = pki.csr_from_bytes(body)
        cert = pki.sign_csr(hub.ca, csr, node=node, days=hub.edge_cert_days)
    except pki.CertificateError as exc:
        status = 403 if "expected" in str(exc) else 400
        raise HttpError(status, str(exc)) from None
    if node in hub.sessions:
        raise HttpError(409, f"node name {node!r} is in use: a node of that name is connected")
    log.info("issued a certificate for node %s", node)
    return pki.cert_der(cert)


async def serve_bootstrap(hub: CloudHub, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the bootstrap API until cancelled; ``started()`` with the bound port."""
    import hypercorn.trio
    from hypercorn.config import Config

    cfg = Config()
    host = hub.address if ":" not in hub.address else f"[{hub.address}]"
    cfg.bind = [f"{host}:{hub.https_port}"]
    cfg.certfile = str(hub.pki_dir / "server.crt")
    cfg.keyfile = str(hub.pki_dir / "server.key")
    cfg.graceful_timeout = 1.0
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("kubeedge.cloudhub.http")
    cfg.loglevel = "WARNING"
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn.trio.serve, make_app(hub), cfg))
        port = int(binds[0].rsplit(":", 1)[1])
        task_status.started(port)

"""``pods/{name}/exec`` and ``pods/{name}/attach`` upgraded to SPDY/3.1: what kubectl before 1.30 speaks (and
1.30+ with ``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false``).

The front (plugins/common/front.py) hands us the raw connection of a request with ``Upgrade: SPDY/3.1``. As
for websockets (stream.py), the bearer token is checked, the pod's node and container are resolved from the
store, and the node's kubelet API is called, which for edge nodes is cloudstream's ``streamPort``: the same
upgrade request goes there (with ``X-Kubeedge-Node`` and the offered ``X-Stream-Protocol-Version`` values),
cloudstream's answer comes back to the client as it is (its 101 names the protocol, an error is its
``Status``), and after a 101 the bytes are relayed both ways unchanged, as a kube-apiserver proxies a
kubelet's upgraded connection.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import trio

from kubeedge.plugins.common.front import RequestHead, http_error, read_head

from .stream import StreamError, _authenticated, _match, _status, _target

__all__ = ["serve_spdy"]

log = logging.getLogger("kubeedge.apiserver.stream")


async def serve_spdy(app: Any, head: RequestHead, client: trio.abc.Stream) -> None:
    try:
        matched = _match(head.path)
        if matched is None or matched[2] == "log":
            raise StreamError(404, f"{head.path} does not upgrade to SPDY (pods/exec and pods/attach do)")
        namespace, name, sub = matched
        scope = {"headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in head.headers]}
        if not _authenticated(app, scope):
            raise StreamError(401, "Unauthorized")
        if head.method not in ("GET", "POST"):
            raise StreamError(405, f"{head.method} is not allowed on pods/{sub}", "MethodNotAllowed")
        query = parse_qs(head.query, keep_blank_values=True)
        node, container, endpoint = _target(app, namespace, name, query)
    except StreamError as exc:
        await client.send_all(http_error(exc.code, _status(exc.code, exc.message, exc.reason)))
        return

    log.debug("apiserver: %s of pod %s/%s (container %s, node %s) over SPDY/3.1", sub, namespace, name, container, node)
    params = [(k, v) for k, values in query.items() if k != "container" for v in values]
    target = f"/{sub}/{quote(namespace)}/{quote(name)}/{quote(container)}?{urlencode(params)}"
    lines = [
        f"POST {target} HTTP/1.1",
        f"Host: 127.0.0.1:{endpoint.port}",
        "Connection: Upgrade",
        "Upgrade: SPDY/3.1",
        f"X-Kubeedge-Node: {node}",
        *(f"X-Stream-Protocol-Version: {v}" for v in head.get_all("x-stream-protocol-version")),
        "Content-Length: 0",
    ]
    try:
        tcp = await trio.open_tcp_stream("127.0.0.1", endpoint.port)
    except OSError as exc:
        status = _status(503, f"cloudstream is not reachable on port {endpoint.port}: {exc!r}")
        await client.send_all(http_error(503, status))
        return
    upstream = trio.SSLStream(tcp, endpoint.ssl_context, server_hostname="127.0.0.1", https_compatible=True)
    try:
        try:
            await upstream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
            with trio.fail_after(30):
                got = await read_head(upstream)
        except (trio.BrokenResourceError, trio.TooSlowError, OSError) as exc:
            status = _status(503, f"cloudstream is not reachable on port {endpoint.port}: {exc!r}")
            await client.send_all(http_error(503, status))
            return
        if got is None:
            status = _status(503, f"cloudstream closed the {sub} of pod {name} without an answer")
            await client.send_all(http_error(503, status))
            return
        answer, rest = got
        await client.send_all(answer + rest)
        await _splice(client, upstream)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await upstream.aclose()


async def _splice(client: trio.abc.Stream, upstream: trio.abc.Stream) -> None:
    """Relay both ways until either side ends (after an error answer, cloudstream's end of the body)."""

    async def pump(source: trio.abc.Stream, sink: trio.abc.Stream, scope: trio.CancelScope) -> None:
        try:
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump, client, upstream, nursery.cancel_scope)
        nursery.start_soon(pump, upstream, client, nursery.cancel_scope)

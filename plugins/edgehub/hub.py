"""edgehub: one mutual-TLS websocket to cloudhub, kept up for as long as the node runs.

Routing of cloud messages (KubeEdge's ``edge/pkg/edgehub/process.go``): group resource/func ->
metamanager, twin -> twin, user -> eventbus; sources router_eventbus / router_servicebus go to those
modules; a reply somebody awaits with ``send_sync`` goes back to them. Edge modules upload by sending to
``websocket``; while the cloud is away uploads wait in a bounded buffer (ACKs are not kept: the cloud
resends what was not acknowledged).
"""

from __future__ import annotations

import logging
import random
import ssl
import time
from collections import deque
from pathlib import Path
from typing import Any

import trio

from kubeedge import BaseModule, Context, Message, MessageError
from kubeedge.plugins.common import pki

log = logging.getLogger("kubeedge.edgehub")

DEFAULT_PROJECT_ID = "e632aba927ea4ac2b575ec1603d56f10"
LINK_LISTENERS = ("metamanager", "twin", "eventbus", "edged", "servicebus", "mappers")
GROUP_ROUTES = {"resource": "metamanager", "func": "metamanager", "twin": "twin", "user": "eventbus"}
SOURCE_ROUTES = {"router_eventbus": "eventbus", "router_servicebus": "servicebus"}


class EdgeHub(BaseModule):
    name = "websocket"
    group = "hub"
    on_failure = "restart"

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        c = self.config
        self.server: str = c.get("server", "127.0.0.1:10000")
        self.http_server: str = c.get("httpServer", "https://127.0.0.1:10002")
        self.token: str = c.get("token", "")
        self.project_id: str = c.get("projectID", DEFAULT_PROJECT_ID)
        self.heartbeat: float = float(c.get("heartbeat", 15))
        self.reconnect_min: float = float(c.get("reconnectMin", 0.2))
        self.reconnect_max: float = float(c.get("reconnectMax", 3.0))
        self.connect_timeout: float = float(c.get("connectTimeout", 5))
        self.max_message_size: int = int(c.get("maxMessageSize", 8 * 1024 * 1024))
        self.rotation: tuple[float, float] = tuple(c.get("rotationFraction", (0.7, 0.9)))
        self.buffer: deque[Message] = deque(maxlen=int(c.get("uploadBuffer", 1000)))
        self.ws: Any = None
        self.connected = trio.Event()
        self.connections = 0
        self.metrics: Any = None  # ctx.metrics once running
        self.rotations = 0
        self.pki_dir = Path()
        self._wake_sender = trio.Event()
        self._new_link = trio.Event()
        self._replies: dict[str, trio.MemorySendChannel[Message]] = {}
        self._node = ""
        self._last_close = ""

    # -- certificates ----------------------------------------------------------------------------------

    def _have_certs(self) -> bool:
        return all((self.pki_dir / f).exists() for f in ("ca.crt", "edge.crt", "edge.key"))

    async def _ensure_certs(self) -> None:
        if self._have_certs():
            not_after = pki.cert_validity(self.pki_dir / "edge.crt")[1]
            if not_after > time.time():
                return
            if not self.token:
                expired = time.strftime("%Y-%m-%d %H:%M", time.gmtime(not_after))
                raise pki.BootstrapError(
                    "check the node certificate",
                    f"it expired on {expired} UTC; set modules.edgehub.token"
                    " to a fresh `keadm gettoken` to get a new one",
                )
            log.warning("node %s: the certificate expired; getting a new one with the token", self._node)
        if not self.token:
            raise pki.BootstrapError(
                "find the node certificate",
                f"none in {self.pki_dir} and no token in the profile (modules.edgehub.token)",
            )
        log.info("node %s: no certificate yet; bootstrapping from the token at %s", self._node, self.http_server)
        await pki.bootstrap_node_cert(self.http_server, self.token, self._node, self.pki_dir)
        log.info("node %s: certificate received and stored in %s", self._node, self.pki_dir)

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        ctx.load_cert_chain(str(self.pki_dir / "edge.crt"), str(self.pki_dir / "edge.key"))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def _rotation_at(self) -> float:
        begin, end = pki.cert_validity(self.pki_dir / "edge.crt")
        return begin + (end - begin) * random.uniform(*self.rotation)

    # -- running ---------------------------------------------------------------------------------------

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        self._node = ctx.node_name
        self.metrics = ctx.metrics
        self.metrics.set("kubeedge_edgehub_connected", 0, help="1 while the link to cloudhub is up")
        self.pki_dir = ctx.data_dir / "pki"
        pending = self.pki_dir / "edge.crt.new"
        if pending.exists() and not (self.pki_dir / "edge.key.new").exists():
            # a rotation stopped between swapping the key and the certificate: finish it
            await trio.to_thread.run_sync(pending.replace, self.pki_dir / "edge.crt")
        if not self._have_certs() and not self.token:
            raise pki.BootstrapError(
                "find the node certificate",
                f"none in {self.pki_dir} and no token in the profile (modules.edgehub.token)",
            )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._uploads, ctx)
            nursery.start_soon(self._sender)
            nursery.start_soon(self._link, ctx)
            # The edge serves without the cloud (autonomy): ready once the upload path is open.
            task_status.started()

    async def _link(self, ctx: Context) -> None:
        from trio_websocket import ConnectionClosed, DisconnectionTimeout, HandshakeError, open_websocket

        host, _, port = self.server.rpartition(":")
        host = host.strip("[]")
        resource = f"/{self.project_id}/{self._node}/events"
        headers = [(b"node_id", self._node.encode()), (b"project_id", self.project_id.encode())]
        backoff = self.reconnect_min
        while True:
            reason = ""
            rotate_now = False
            try:
                await self._ensure_certs()
                ssl_ctx = self._ssl_context()
                async with open_websocket(
                    host,
                    int(port),
                    resource,
                    use_ssl=ssl_ctx,
                    extra_headers=headers,
                    connect_timeout=self.connect_timeout,
                    disconnect_timeout=min(2.0, self.heartbeat),  # a dead link must not hold us
                    max_message_size=self.max_message_size,
                    message_queue_size=64,
                ) as ws:
                    backoff = self.reconnect_min
                    self._last_close = ""
                    rotate_now = await self._serve(ctx, ws)
                    reason = self._last_close
            except pki.BootstrapError as exc:
                reason = f"certificate bootstrap failed at step '{exc.step}': {exc.reason}"
            except DisconnectionTimeout:
                reason = self._last_close or "link closed (the cloud did not answer the close)"
            except HandshakeError as exc:
                reason = f"cannot connect to {self.server}: {_describe(exc)}"
            except ConnectionClosed as exc:
                reason = "link closed ({} {})".format(*close_info(exc)).rstrip()
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
                reason = f"link lost: {exc or type(exc).__name__}"
            await self._link_down(ctx, reason)
            if rotate_now:
                continue
            await trio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, self.reconnect_max)

    async def _serve(self, ctx: Context, ws: Any) -> bool:
        """Run one connection; return True when it ended for a certificate rotation."""
        from trio_websocket import ConnectionClosed

        self.ws = ws
        self.connections += 1
        ctx.metrics.set("kubeedge_edgehub_connected", 1, help="1 while the link to cloudhub is up")
        ctx.metrics.inc("kubeedge_edgehub_connections_total", help="Links to cloudhub established")
        log.info("node %s: connected to cloudhub %s", self._node, self.server)
        self.connected.set()
        await self._tell_modules(ctx, "cloud_connected")
        self._wake_sender.set()
        self._new_link.set()
        self._new_link = trio.Event()
        rotated = False
        async with trio.open_nursery() as nursery:

            async def heartbeat() -> None:
                try:
                    reason = await self._heartbeat(ws)
                except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    reason = f"heartbeat failed ({exc or type(exc).__name__})"
                self._last_close = self._last_close or reason
                nursery.cancel_scope.cancel()

            async def rotate() -> None:
                nonlocal rotated
                try:
                    rotated = await self._rotate(ws)
                except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                if rotated:
                    self._last_close = "certificate rotated"
                    nursery.cancel_scope.cancel()

            nursery.start_soon(heartbeat)

            nursery.start_soon(rotate)
            try:
                await self._receive(ctx, ws)
            except ConnectionClosed as exc:
                self._last_close = "link closed ({} {})".format(*close_info(exc)).rstrip()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._last_close = f"link lost ({exc or type(exc).__name__})"
            nursery.cancel_scope.cancel()
        return rotated

    async def _link_down(self, ctx: Context, reason: str) -> None:
        was_up = self.ws is not None
        self.ws = None
        ctx.metrics.set("kubeedge_edgehub_connected", 0, help="1 while the link to cloudhub is up")
        self._new_link.set()
        self._new_link = trio.Event()
        if self.connected.is_set():
            self.connected = trio.Event()
        for waiter in self._replies.values():
            waiter.close()
        self._replies.clear()
        if was_up:
            log.warning("node %s: cloud link down: %s", self._node, reason or "closed")
            await self._tell_modules(ctx, "cloud_disconnected")
        elif reason:
            log.warning("node %s: %s", self._node, reason)

    async def _tell_modules(self, ctx: Context, what: str) -> None:
        for name in LINK_LISTENERS:
            if ctx.bus.has_module(name):
                await ctx.send(
                    name,
                    Message(
                        source=self.name, group="meta", operation="connect", resource="node/connection", content=what
                    ),
                )

    async def _heartbeat(self, ws: Any) -> str:
        while True:
            await ws.send_message(
                Message(
                    source=self.name, group="resource", operation="keepalive", resource="node", content="ping"
                ).to_json()
                + "\n"
            )
            # A websocket ping proves the cloud still reads: a half-open link is caught within a heartbeat.
            with trio.move_on_after(self.heartbeat) as pong:
                await ws.ping()
            if pong.cancelled_caught:
                return f"no pong within {self.heartbeat:g} s (half-open link?)"
            await trio.sleep(self.heartbeat)

    async def _receive(self, ctx: Context, ws: Any) -> None:
        while True:
            frame = await ws.get_message()
            try:
                message = Message.from_json(frame)
            except MessageError as exc:
                log.warning("node %s: malformed frame from the cloud ignored: %s", self._node, exc)
                continue
            ctx.metrics.inc("kubeedge_edgehub_messages_received_total", help="Messages from the cloud")
            await self._route(ctx, message)

    async def _route(self, ctx: Context, message: Message) -> None:
        if message.parent_msg_id:
            waiter = self._replies.get(message.parent_msg_id)
            if waiter is not None:
                waiter.send_nowait(message)
                return
            if ctx.bus.is_awaited(message.parent_msg_id):
                ctx.send_resp(message)
                return
        target = SOURCE_ROUTES.get(message.source) or GROUP_ROUTES.get(message.group)
        if target is None:
            log.debug(
                "node %s: no route for group %r (%s %s)", self._node, message.group, message.operation, message.resource
            )
            return
        if not ctx.bus.has_module(target):
            log.debug("node %s: %s not loaded; dropped %s %s", self._node, target, message.operation, message.resource)
            return
        await ctx.send(target, message)

    async def _uploads(self, ctx: Context) -> None:
        async for message in ctx.bus.channel(self.name):
            if message.operation == "response" and self.ws is None:
                continue  # an ACK for a dead link: the cloud resends whatever was not acknowledged
            if len(self.buffer) == self.buffer.maxlen:
                log.warning("node %s: upload buffer full (cloud away); dropping the oldest", self._node)
            self.buffer.append(message)
            ctx.metrics.set("kubeedge_edgehub_upload_backlog", len(self.buffer), help="Messages waiting to go up")
            self._wake_sender.set()

    async def _sender(self) -> None:
        from trio_websocket import ConnectionClosed

        while True:
            ws = self.ws
            if ws is None or not self.buffer:
                await self._wake_sender.wait()
                self._wake_sender = trio.Event()
                continue
            message = self.buffer[0]
            try:
                await ws.send_message(message.to_json() + "\n")
            except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                # The link task notices and reconnects; the message stays first in line.
                while self.ws is ws:
                    await self._new_link.wait()
                continue
            if self.buffer and self.buffer[0] is message:
                self.buffer.popleft()
            if self.metrics is not None:
                self.metrics.inc("kubeedge_edgehub_messages_sent_total", help="Messages sent to the cloud")
                self.metrics.set("kubeedge_edgehub_upload_backlog", len(self.buffer), help="Messages waiting to go up")

    async def request(self, message: Message, timeout: float = 30.0) -> Message:  # noqa: ASYNC109
        """Send ``message`` to the cloud and wait for the reply (edgehub's own requests)."""
        ws = self.ws
        if ws is None:
            raise trio.ClosedResourceError("not connected to the cloud")
        send, receive = trio.open_memory_channel[Message](1)
        self._replies[message.msg_id] = send
        try:
            await ws.send_message(message.to_json() + "\n")
            with trio.fail_after(timeout):
                return await receive.receive()
        except trio.EndOfChannel:
            raise trio.ClosedResourceError("the link went down before the reply") from None
        finally:
            self._replies.pop(message.msg_id, None)

    def _store(self, cert: Any, key: Any) -> None:
        """Replace the node's key and certificate (each file swapped whole; the key first)."""
        pki.write_private(self.pki_dir / "edge.key.new", pki.key_pem(key))
        (self.pki_dir / "edge.crt.new").write_bytes(pki.cert_pem(cert))
        (self.pki_dir / "edge.key.new").replace(self.pki_dir / "edge.key")
        (self.pki_dir / "edge.crt.new").replace(self.pki_dir / "edge.crt")

    async def _rotate(self, ws: Any) -> bool:
        """Wait until the certificate is due for renewal, renew it over the link, store it."""
        at = self._rotation_at()
        await trio.sleep(max(0.0, at - time.time()))
        from cryptography.hazmat.primitives import serialization

        csr, key = pki.make_csr(self._node)
        request = Message(
            source=self.name,
            group="resource",
            operation="sign",
            resource="edge.crt",
            content=csr.public_bytes(serialization.Encoding.PEM).decode(),
        )
        try:
            reply = await self.request(request, timeout=30)
        except (trio.TooSlowError, trio.ClosedResourceError) as exc:
            log.warning("node %s: certificate renewal failed: %s; retrying on the next connection", self._node, exc)
            await trio.sleep_forever()
        if reply.operation != "response" or not isinstance(reply.content, str):
            log.warning("node %s: certificate renewal refused: %s", self._node, reply.content)
            await trio.sleep_forever()
        cert = pki.cert_from_bytes(reply.content.encode())
        await trio.to_thread.run_sync(self._store, cert, key)
        self.rotations += 1
        log.info(
            "node %s: certificate rotated (valid until %s); reconnecting with it", self._node, cert.not_valid_after_utc
        )
        return True


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None:
        text = f"{text} ({cause or type(cause).__name__})"
    return text


def close_info(exc: Any) -> tuple[int, str]:
    """(code, reason) of a trio-websocket ConnectionClosed, whose reason may be missing."""
    reason = getattr(exc, "reason", None)
    if reason is None:
        return 1006, "abnormal closure"
    return int(reason.code), str(reason.reason or reason.name or "")

"""cloudhub: the cloud end of the link.

- a websocket server with mutual TLS (``/<projectID>/<node>/events``; the client certificate's
  ``CN=system:node:<node>`` must name the node of the path and the ``node_id`` header);
- one session per node (a second connection replaces the first), a node limit, keepalive;
- per-node reliable queues (:mod:`.queue`) and ObjectSync records (:mod:`.records`);
- the HTTPS bootstrap server (:mod:`.bootstrap`) for ``/ca.crt`` and ``/edge.crt``.

Controllers feed it over the bus: ``Message(group="resource", operation="insert|update|delete",
resource="node/<node>/<ns>/<type>/<name>", resource_version=..., content=obj)``. Upstream messages get
``node/<node>/`` put back in front of their resource and go to devicecontroller, router or
edgecontroller (see COMMON contracts).
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import logging
import ssl
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio

from kubeedge import BaseModule, Context, Message, MessageError
from kubeedge.plugins.common import pki

from .queue import Entry, NodeQueue, needs_ack
from .records import SqliteSyncRecords, SyncRecord, SyncRecords, compare_versions
from .tls import ServerTLS
from .wsconn import HandshakeFailed, LinkClosed, ServerLink

log = logging.getLogger("kubeedge.cloudhub")

DEFAULT_PROJECT_ID = "e632aba927ea4ac2b575ec1603d56f10"
KNOWN_OPERATIONS = frozenset(
    "insert update delete query patch upload response error keepalive connect subscribe unsubscribe message"
    " publish get_result start stop get list detail delta document updated deleted connected disconnected"
    " sign".split()
)
CLUSTER_SCOPED = frozenset({"node", "namespace", "persistentvolume", "storageclass", "csinode", "clusterrole"})


def parse_resource(resource: str) -> tuple[str, str]:
    """``node/<node>/<rest>`` -> (node, rest). Raises ValueError for anything else."""
    parts = resource.split("/", 2)
    if len(parts) < 2 or parts[0] != "node" or not parts[1]:
        raise ValueError(f"resource {resource!r} does not start with node/<node>/")
    return parts[1], parts[2] if len(parts) == 3 else ""


def object_identity(key: str, content: Any) -> tuple[str, str, str, str, str]:
    """(uid, kind, namespace, name, apiVersion) of the object a message carries."""
    meta = content.get("metadata") if isinstance(content, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    parts = key.split("/")
    namespace = parts[0] if len(parts) >= 3 else ""
    kind_word = parts[1] if len(parts) >= 3 else (parts[0] if parts else "")
    name = meta.get("name") or (parts[2] if len(parts) >= 3 else "")
    uid = meta.get("uid") or key.replace("/", ".")
    kind = (content.get("kind") if isinstance(content, dict) else None) or kind_word
    api_version = (content.get("apiVersion") if isinstance(content, dict) else None) or ""
    if kind_word in CLUSTER_SCOPED:
        namespace = ""
    return str(uid), str(kind), str(meta.get("namespace", namespace) or ""), str(name), str(api_version)


class SessionRejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclasses.dataclass(eq=False)
class Session:
    node: str
    ws: Any
    remote: str
    scope: trio.CancelScope = dataclasses.field(default_factory=trio.CancelScope)
    done: trio.Event = dataclasses.field(default_factory=trio.Event)
    close_reason: str = ""
    close_code: int = 1000

    def stop(self, reason: str, code: int = 1000) -> None:
        if not self.close_reason:
            self.close_reason = reason
            self.close_code = code
        self.scope.cancel()


class CloudHub(BaseModule):
    name = "cloudhub"
    group = "cloudhub"
    on_failure = "stop"

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        c = self.config
        self.address: str = c.get("address", "0.0.0.0")
        self.port: int = int(c.get("port", 10000))
        self.https_port: int = int(c.get("httpsPort", 10002))
        self.advertise: list[str] = list(c.get("advertiseAddress") or [])
        self.node_limit: int = int(c.get("nodeLimit", 1000))
        self.keepalive_interval: float = float(c.get("keepaliveInterval", 30))
        self.project_id: str = c.get("projectID", DEFAULT_PROJECT_ID)
        self.retry_interval: float = float(c.get("retryInterval", 5))
        self.max_sends: int = int(c.get("maxSends", 5))
        self.window: int = int(c.get("window", 256))
        self.max_message_size: int = int(c.get("maxMessageSize", 8 * 1024 * 1024))
        self.edge_cert_days: float = float(c.get("edgeCertValidityDays", pki.EDGE_VALIDITY_DAYS))
        self.handshake_timeout: float = float(c.get("handshakeTimeout", 10))
        self.test_ingress: bool = bool(c.get("testIngress", False))
        self.token_refresh: float = float(c.get("tokenRefreshSeconds", 12 * 3600))
        self.gc_threshold: int = int(c.get("gcThreshold", 50_000))
        self.sessions: dict[str, Session] = {}
        self.queues: dict[str, NodeQueue] = {}
        self.fed: dict[str, dict[str, Message]] = {}  # the newest message fed per node and key
        self.records: SyncRecords | None = None
        self.ca: pki.CA | None = None
        self.acked = 0
        self.on_ack: Callable[[Entry, float], None] | None = None
        self.session_changed = trio.Event()
        self.ack_event = trio.Event()  # fires after every ACK (tests and benchmarks wait on it)
        self._timers: list[tuple[float, int, NodeQueue]] = []
        self._timer_changed = trio.Event()
        self.pki_dir = Path()
        self._ctx: Context | None = None

    # -- start-up ---------------------------------------------------------------------------------------

    def _prepare_pki(self, data_dir: Path) -> tuple[ssl.SSLContext, pki.CA]:
        self.pki_dir = data_dir / "pki"
        ca = pki.CA.ensure(self.pki_dir)
        crt, key = self.pki_dir / "server.crt", self.pki_dir / "server.key"
        wanted = self.advertise or ["127.0.0.1", "localhost"]
        if not pki.server_cert_covers(ca, crt, wanted):
            cert, server_key = pki.issue_server_cert(
                ca, [*wanted, "localhost"] if "localhost" not in wanted else wanted
            )
            pki.write_private(key, pki.key_pem(server_key))
            crt.write_bytes(pki.cert_pem(cert))
            log.info("issued the cloudhub server certificate for %s", ", ".join(wanted))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.pki_dir / "ca.crt"))
        ctx.load_cert_chain(str(crt), str(key))
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx, ca

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        self._ctx = ctx
        ssl_ctx, self.ca = await trio.to_thread.run_sync(self._prepare_pki, ctx.data_dir)
        await trio.to_thread.run_sync(self._write_token)
        records = SqliteSyncRecords(ctx.database())
        self.records = records
        from .bootstrap import serve_bootstrap

        async with trio.open_nursery() as nursery:
            await nursery.start(records.run)
            listeners = await nursery.start(self._serve_ws, ssl_ctx)
            self.port = listeners[0].socket.getsockname()[1]
            self.https_port = await nursery.start(serve_bootstrap, self)
            ports = json.dumps({"port": self.port, "httpsPort": self.https_port, "pid": _pid()})
            await trio.to_thread.run_sync((ctx.data_dir / "cloudhub.json").write_text, ports)
            nursery.start_soon(self._bus_loop, ctx)
            nursery.start_soon(self._refresh_token)
            nursery.start_soon(self._retry_timer)
            log.info(
                "cloudhub serving: websocket wss://%s:%d, bootstrap https://%s:%d (CA %s…)",
                self.address,
                self.port,
                self.address,
                self.https_port,
                self.ca.hash[:12] if self.ca else "-",
            )
            self._tune_gc()
            task_status.started()

    def _tune_gc(self) -> None:
        # A hub holds many long-lived objects (sessions, queues, records): with Python's default collector
        # thresholds the old generations are rescanned every few thousand allocations, which showed as
        # 100+ ms pauses in bench/link.py. Collect less often (process-wide; never lowers a higher setting).
        if self.gc_threshold <= 0:
            return
        import gc

        young, middle, old = gc.get_threshold()
        if young < self.gc_threshold:
            gc.set_threshold(self.gc_threshold, max(middle, 50), max(old, 1000))

    async def _refresh_token(self) -> None:
        """Keep a current join token in ``pki/token`` (valid 24 h, rewritten every 12 h, as KubeEdge's secret)."""
        while True:
            await trio.sleep(self.token_refresh)
            await trio.to_thread.run_sync(self._write_token)

    def _write_token(self) -> None:
        assert self.ca is not None
        token = pki.make_token(self.ca, validity=2 * self.token_refresh)
        staging = self.pki_dir / "token.new"
        pki.write_private(staging, token.encode())
        staging.replace(self.pki_dir / "token")  # readers never see half a token

    async def _serve_ws(self, ssl_ctx: ssl.SSLContext, *, task_status: trio.TaskStatus[Any]) -> None:
        # TLS by ServerTLS rather than trio's SSLStream: one scheduler turn per read or write, not two.
        await trio.serve_tcp(
            partial(self._on_connection_guarded, ssl_ctx), self.port, host=self.address, task_status=task_status
        )

    async def _on_connection_guarded(self, ssl_ctx: ssl.SSLContext, socket_stream: trio.SocketStream) -> None:
        stream = ServerTLS(socket_stream, ssl_ctx)
        # One connection's failure must never take the listener (and every other node) down.
        try:
            await self._on_connection(stream)
        except Exception:
            log.exception("connection from %s failed", _peer(stream))
            await trio.aclose_forcefully(stream)

    # -- sessions ---------------------------------------------------------------------------------------

    async def _on_connection(self, stream: ServerTLS) -> None:
        remote = _peer(stream)
        try:
            with trio.fail_after(self.handshake_timeout):
                await stream.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError, ssl.SSLError, OSError) as exc:
            log.warning("TLS handshake from %s refused: %s", remote, _tls_reason(exc))
            await trio.aclose_forcefully(stream)
            return
        der = stream.getpeercert(binary_form=True)
        cert_node = pki.node_from_cert(pki.cert_from_bytes(der)) if der else ""
        link = ServerLink(stream, max_message_size=self.max_message_size)
        try:
            try:
                with trio.fail_after(self.handshake_timeout):
                    request = await link.read_request()
            except trio.TooSlowError:
                log.warning("websocket handshake from %s timed out", remote)
                await trio.aclose_forcefully(stream)
                return
            except HandshakeFailed as exc:
                log.warning("connection from %s refused: not a websocket handshake: %s", remote, exc)
                return
            try:
                node = self._check_request(request.target, request.extra_headers, cert_node)
            except SessionRejected as exc:
                log.warning("connection from %s refused (%d): %s", remote, exc.status, exc.reason)
                await link.reject(exc.status, exc.reason.encode())
                return
            await link.accept()
        except LinkClosed as exc:
            log.debug("connection from %s ended during the handshake: %s", remote, exc)
            await trio.aclose_forcefully(stream)
            return
        await self._run_session(Session(node, link, remote))

    def _check_request(self, path: str, request_headers: Any, cert_node: str) -> str:
        parts = path.split("?")[0].strip("/").split("/")
        if len(parts) != 3 or parts[2] != "events" or not parts[1]:
            raise SessionRejected(404, f"unknown path {path!r}; expected /<projectID>/<nodeName>/events")
        node = parts[1]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request_headers}
        header_node = headers.get("node_id", "")
        if header_node and header_node != node:
            raise SessionRejected(400, f"node_id header {header_node!r} does not match the path's node {node!r}")
        project = headers.get("project_id", "")
        if project and project != parts[0]:
            raise SessionRejected(400, f"project_id header {project!r} does not match the path {parts[0]!r}")
        if cert_node != node:
            raise SessionRejected(
                403, f"certificate is for node {cert_node or '(none)'!r}, not {node!r}: node identity mismatch"
            )
        if node not in self.sessions and len(self.sessions) >= self.node_limit:
            raise SessionRejected(429, f"node limit ({self.node_limit}) reached; node {node!r} refused")
        return node

    def queue(self, node: str) -> NodeQueue:
        queue = self.queues.get(node)
        if queue is None:
            queue = self.queues[node] = NodeQueue(
                node, retry_interval=self.retry_interval, max_sends=self.max_sends, window=self.window
            )
        return queue

    async def _run_session(self, session: Session) -> None:

        node = session.node
        old = self.sessions.get(node)
        if old is not None:
            log.info("node %s: new connection from %s replaces the one from %s", node, session.remote, old.remote)
            old.stop("replaced by a newer connection of the same node", 4000)
            with trio.move_on_after(5):
                await old.done.wait()
        self.sessions[node] = session
        self._changed()
        queue = self.queue(node)
        log.info("node %s connected from %s", node, session.remote)
        await self._notify(node, "connected")
        try:
            with session.scope:
                async with trio.open_nursery() as nursery:
                    # The reader alone ends the session: when sending fails because the edge is closing,
                    # what it sent before its close frame is still read (uploads, ACKs), not discarded.
                    nursery.start_soon(self._guard, session, partial(self._pump, session, queue), None)
                    await self._guard(session, partial(self._read, session, queue), nursery)
        finally:
            if not session.close_reason:  # cancelled from outside: the hub is stopping
                session.close_reason, session.close_code = "cloudhub is shutting down", 1001
            queue.disconnected()
            if self.sessions.get(node) is session:
                del self.sessions[node]
                self._changed()
            with trio.CancelScope(shield=True):
                with trio.move_on_after(1):
                    try:
                        await session.ws.aclose(session.close_code, session.close_reason[:120] or None)
                    except Exception as exc:
                        log.debug("node %s: close: %s", node, exc)
                log.info("node %s disconnected: %s", node, session.close_reason or "session ended")
                if self.sessions.get(node) is None:
                    await self._notify(node, "disconnected")
            session.done.set()

    async def _guard(self, session: Session, work: Any, nursery: trio.Nursery | None) -> None:
        """Run one half of a session; when the link fails, note why and end the other half too."""
        try:
            await work()
        except LinkClosed as exc:
            if exc.code == 1009:
                log.warning(
                    "node %s: frame over the size limit (%d bytes); connection closed",
                    session.node,
                    self.max_message_size,
                )
            if not session.close_reason:
                session.close_reason = f"closed ({exc.code} {exc.reason})".rstrip()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            if not session.close_reason:
                session.close_reason = f"connection lost ({exc or type(exc).__name__})"
        if nursery is not None:
            nursery.cancel_scope.cancel()

    def _changed(self) -> None:
        self.session_changed.set()
        self.session_changed = trio.Event()
        if self._ctx is not None:
            self._ctx.metrics.set("kubeedge_hub_sessions", len(self.sessions), help="Edge nodes connected")

    async def _read(self, session: Session, queue: NodeQueue) -> None:
        # One scope whose deadline moves with every frame (a scope per frame costs on a busy hub).
        with trio.CancelScope() as idle:
            idle.deadline = trio.current_time() + self.keepalive_interval
            await self._read_frames(session, queue, idle)
        if idle.cancelled_caught:
            session.stop(f"no keepalive for {self.keepalive_interval:g} s", 1001)

    async def _read_frames(self, session: Session, queue: NodeQueue, idle: trio.CancelScope) -> None:
        node = session.node
        link: ServerLink = session.ws
        while True:
            frames = await link.receive()  # every message one read brought; ACKs are matched right here
            idle.deadline = trio.current_time() + self.keepalive_interval
            for frame in frames:
                try:
                    data = json.loads(frame)
                except (ValueError, UnicodeDecodeError) as exc:
                    log.warning("node %s: malformed frame refused: not JSON: %s", node, exc)
                    continue
                acked = _acknowledged_id(data)
                if acked:  # the common case on a busy hub: an ACK, matched without building a Message
                    entry = queue.ack(acked)
                    if entry is not None:
                        self._acked(node, entry)
                        continue
                try:
                    message = Message.from_dict(data)
                except MessageError as exc:
                    log.warning("node %s: malformed frame refused: %s", node, exc)
                    continue
                await self._from_edge(node, message, queue, session)

    async def _pump(self, session: Session, queue: NodeQueue) -> None:
        while True:
            now = trio.current_time()
            batch = queue.next_batch(now)
            if batch:
                await session.ws.send_frames([message.to_json() for message in batch])
                continue
            if queue.has_ready():
                continue
            due = queue.next_due()
            if due is not None:
                self._schedule(queue, due)
            queue.wake = trio.Event()
            await queue.wake.wait()

    def _schedule(self, queue: NodeQueue, due: float) -> None:
        """Have the retry timer wake ``queue`` at ``due`` (one timer for all nodes: no scope per send)."""
        if queue.timer_due is not None and queue.timer_due <= due:
            return
        queue.timer_due = due
        earliest = self._timers[0][0] if self._timers else float("inf")
        heapq.heappush(self._timers, (due, id(queue), queue))
        if due < earliest:
            self._timer_changed.set()

    async def _retry_timer(self) -> None:
        while True:
            deadline = self._timers[0][0] if self._timers else float("inf")
            with trio.move_on_at(deadline):
                await self._timer_changed.wait()
            self._timer_changed = trio.Event()
            now = trio.current_time()
            while self._timers and self._timers[0][0] <= now:
                due, _, queue = heapq.heappop(self._timers)
                if queue.timer_due == due:
                    queue.timer_due = None
                    queue.wake.set()

    # -- edge -> cloud ----------------------------------------------------------------------------------

    async def _from_edge(self, node: str, message: Message, queue: NodeQueue, session: Session) -> None:
        op = message.operation
        if op == "keepalive":
            return
        if op not in KNOWN_OPERATIONS:
            log.warning("node %s: unknown operation %r on %s refused", node, op, message.resource)
            reply = message.reply(f"unknown operation {op!r}", operation="error", source="cloudhub")
            await session.ws.send_message(reply.to_json())
            return
        if op == "response" and message.parent_msg_id:
            entry = queue.ack(message.parent_msg_id)
            if entry is not None:
                self._acked(node, entry)
                return
        if op == "sign" and message.resource == "edge.crt":
            await self._renew(node, message, session)
            return
        message.resource = f"node/{node}/{message.resource}" if message.resource else f"node/{node}"
        ctx = self._ctx
        assert ctx is not None
        if message.parent_msg_id and ctx.bus.is_awaited(message.parent_msg_id):
            ctx.send_resp(message)
            return
        target = self._upstream_target(message)
        if not ctx.bus.has_module(target):
            log.debug("node %s: no %s module for %s %s; dropped", node, target, op, message.resource)
            return
        await ctx.send(target, message)

    @staticmethod
    def _upstream_target(message: Message) -> str:
        if message.group == "twin" or "/device/" in message.resource or message.resource.endswith("/membership"):
            return "devicecontroller"
        if message.source.startswith("router_") or message.group == "user":
            return "router"
        return "edgecontroller"

    def _acked(self, node: str, entry: Entry) -> None:
        self.acked += 1
        self.ack_event.set()
        self.ack_event = trio.Event()
        if self._ctx is not None:
            self._ctx.metrics.observe(
                "kubeedge_hub_ack_latency_seconds",
                trio.current_time() - entry.enqueued,
                help="From a message queued for a node to the node's ACK",
            )
        if self.on_ack is not None:
            self.on_ack(entry, trio.current_time())
        assert self.records is not None
        message = entry.message
        if message.operation == "delete":
            self.records.remove(node, entry.uid)
            return
        _uid, kind, namespace, name, api_version = object_identity(entry.key, message.content)
        self.records.put(
            SyncRecord(
                node=node,
                uid=entry.uid,
                resource=entry.key,
                kind=kind,
                namespace=namespace,
                object_name=name,
                api_version=api_version,
                resource_version=message.resource_version,
            )
        )

    async def _renew(self, node: str, message: Message, session: Session) -> None:
        """Certificate renewal over the authenticated link: the session already proved the node's identity."""
        assert self.ca is not None
        try:
            csr = pki.csr_from_bytes(str(message.content or "").encode())
            cert = pki.sign_csr(self.ca, csr, node=node, days=self.edge_cert_days)
            reply = message.reply(pki.cert_pem(cert).decode(), source="cloudhub")
            log.info("node %s: certificate renewed", node)
        except pki.CertificateError as exc:
            reply = message.reply(f"certificate renewal refused: {exc}", operation="error", source="cloudhub")
            log.warning("node %s: certificate renewal refused: %s", node, exc)
        await session.ws.send_message(reply.to_json())

    async def _notify(self, node: str, what: str) -> None:
        ctx = self._ctx
        if ctx is None or not ctx.bus.has_module("edgecontroller"):
            return
        await ctx.send(
            "edgecontroller", Message(source="cloudhub", group="resource", operation=what, resource=f"node/{node}")
        )

    # -- cloud -> edge ----------------------------------------------------------------------------------

    async def _bus_loop(self, ctx: Context) -> None:
        async for message in ctx.bus.channel(self.name):
            try:
                await self.handle(ctx, message)
            except Exception as exc:  # a bad message from one controller must not stop the hub
                log.warning(
                    "cloudhub: refused %s %s from %s: %s", message.operation, message.resource, message.source, exc
                )
                if message.sync:
                    ctx.send_resp(message.reply(str(exc), operation="error", source=self.name))

    async def handle(self, ctx: Context, message: Message) -> None:
        """One message from a controller (or the sync controller)."""
        op = message.operation
        if op == "query" and message.resource in ("objectsync", "fedobjects"):
            content = self._records_view() if message.resource == "objectsync" else self._fed_view()
            ctx.send_resp(message.reply(content, source=self.name))
            return
        if op == "resync":
            node, key = parse_resource(message.resource)
            fed = self.fed.get(node, {}).get(key)
            if fed is not None:
                self.enqueue(node, dataclasses.replace(fed, msg_id=_new_id(), source=message.source or fed.source))
            return
        node, key = parse_resource(message.resource)
        if op == "delete" and not key:
            self.drop_node(node)
            return
        self.enqueue(node, message, key)

    def enqueue(self, node: str, message: Message, key: str | None = None) -> bool:
        """Queue a controller's message for ``node``; returns whether it was queued."""
        if key is None:
            key = message.resource
        else:
            message = dataclasses.replace(message, resource=key)
        queue = self.queue(node)
        if not needs_ack(message):
            queue.add_no_ack(message)
            return True
        uid = object_identity(key, message.content)[0]
        if message.operation == "delete":
            self.fed.get(node, {}).pop(key, None)
        else:
            if not message.resource_version:
                raise ValueError(f"{message.operation} {key} for node {node} carries no resourceversion")
            current = self.fed.setdefault(node, {}).get(key)
            if current is None or compare_versions(message.resource_version, current.resource_version) >= 0:
                self.fed[node][key] = message
            assert self.records is not None
            record = self.records.get(node, uid)
            if record is not None and compare_versions(message.resource_version, record.resource_version) <= 0:
                return False  # the edge already has this version or a newer one
        return queue.add(Entry(key=key, message=message, uid=uid, enqueued=trio.current_time()))

    def drop_node(self, node: str) -> None:
        queue = self.queues.pop(node, None)
        self.fed.pop(node, None)
        assert self.records is not None
        removed = self.records.remove_node(node)
        session = self.sessions.get(node)
        if session is not None:
            session.stop("node deleted", 4001)
        log.info(
            "node %s deleted: dropped %d queued messages and %d ObjectSync records",
            node,
            len(queue.entries) if queue else 0,
            removed,
        )

    def _records_view(self) -> list[dict[str, Any]]:
        assert self.records is not None
        view = []
        for record in self.records.list():
            queue = self.queues.get(record.node)
            view.append(record.public() | {"queued": bool(queue and record.resource in queue.entries)})
        return view

    def _fed_view(self) -> list[dict[str, Any]]:
        view = []
        for node, objects in self.fed.items():
            for key, message in objects.items():
                uid = object_identity(key, message.content)[0]
                queued = key in self.queues.get(node, NodeQueue(node)).entries
                view.append(
                    {
                        "node": node,
                        "resource": key,
                        "uid": uid,
                        "resourceVersion": message.resource_version,
                        "queued": queued,
                    }
                )
        return view


def _new_id() -> str:
    from kubeedge.message import new_msg_id

    return new_msg_id()


def _pid() -> int:
    import os

    return os.getpid()


def _peer(stream: ServerTLS) -> str:
    try:
        host, port = stream.transport_stream.socket.getpeername()[:2]
        return f"{host}:{port}"
    except (OSError, AttributeError):
        return "?"


def _tls_reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__ or exc
    if isinstance(exc, trio.TooSlowError):
        return "handshake timed out"
    text = str(cause) or type(cause).__name__
    if "PEER_DID_NOT_RETURN_A_CERTIFICATE" in text:
        return "the client presented no certificate"
    if "CERTIFICATE_VERIFY_FAILED" in text or "unknown ca" in text.lower() or "certificate verify failed" in text:
        return f"the client certificate is not from this cloud's CA ({text})"
    return text


def _acknowledged_id(data: Any) -> str:
    """The ``parent_msg_id`` of an ACK (``route.operation == "response"``) in its usual spelling, else ``""``."""
    if not isinstance(data, dict):
        return ""
    header, route = data.get("header"), data.get("route")
    if not isinstance(header, dict) or not isinstance(route, dict) or route.get("operation") != "response":
        return ""
    parent = header.get("parent_msg_id")
    return parent if isinstance(parent, str) else ""

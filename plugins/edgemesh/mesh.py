"""The edgemesh module: a DNS server and a TCP proxy driven by the Services and Endpoints the edge stored."""

from __future__ import annotations

import logging
from typing import Any

import trio

from kubeedge import BaseModule, Context, Message

from .registry import Registry, Service, ServicePort

log = logging.getLogger("kubeedge.edgemesh")

UPSTREAM_TIMEOUT = 2.0
CONNECT_TIMEOUT = 3.0
KINDS = ("service", "endpoints")


def default_upstream() -> str | None:
    try:
        with open("/etc/resolv.conf") as resolv:
            for line in resolv:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    return parts[1]
    except OSError:
        pass
    return None


class EdgeMesh(BaseModule):
    name = "edgemesh"
    group = "edgemesh"
    after = ("metamanager",)

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.registry = Registry(self.config.get("clusterDomain", "cluster.local"))
        dns = self.config.get("dns") or {}
        proxy = self.config.get("proxy") or {}
        self.dns_enabled = dns.get("enable", True)
        self.dns_address = dns.get("address", "169.254.96.16")
        self.dns_port: int = dns.get("port", 53)
        self.ttl = int(dns.get("ttl", 5))
        self.upstream = dns.get("upstream") or default_upstream()
        self.proxy_enabled = proxy.get("enable", True)
        self.proxy_address = proxy.get("address", "127.0.0.1")
        self.port_offset = int(proxy.get("portOffset", 0))
        self._listeners: dict[tuple[str, str, str], tuple[int, trio.CancelScope]] = {}
        self._listen_nursery: trio.Nursery | None = None
        self._connection_nursery: trio.Nursery | None = None
        self.proxy_ports: dict[tuple[str, str, str], int] = {}  # (ns, service, port name) -> listening port

    # -- the module -----------------------------------------------------------------------------------

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await self._load_stored(ctx)
        async with trio.open_nursery() as nursery:
            self._listen_nursery = nursery
            self._connection_nursery = nursery
            if self.dns_enabled:
                await nursery.start(self._serve_dns, ctx)
            if self.proxy_enabled:
                await self._reconcile_proxies(ctx)
            task_status.started()
            async for message in ctx.bus.channel(self.name):
                await self._on_message(ctx, message)

    async def _load_stored(self, ctx: Context) -> None:
        if not ctx.bus.has_module("metamanager"):
            return
        for kind in KINDS:
            request = Message(source=self.name, group="meta", operation="query", resource=f"*/{kind}")
            try:
                reply = await ctx.send_sync("metamanager", request, timeout=10)
            except Exception as exc:  # the mesh still serves what arrives later
                log.warning("edgemesh: could not read stored %s from metamanager: %s", kind, exc)
                continue
            for obj in reply.content if isinstance(reply.content, list) else []:
                self._apply(kind, "insert", obj)

    def _apply(self, kind: str, operation: str, obj: Any) -> bool:
        if not isinstance(obj, dict) or "name" not in (obj.get("metadata") or {}):
            return False
        meta = obj["metadata"]
        if operation == "delete":
            self.registry.remove(kind, meta.get("namespace", "default"), meta["name"])
        elif kind == "service":
            self.registry.put_service(obj)
        else:
            self.registry.put_endpoints(obj)
        return True

    async def _on_message(self, ctx: Context, message: Message) -> None:
        parts = message.resource.split("/")
        kind = parts[1] if len(parts) >= 3 else ""
        if kind not in KINDS or message.operation not in ("insert", "update", "delete"):
            log.debug("edgemesh: ignoring %s %s", message.operation, message.resource)
            return
        content = message.content
        if message.operation == "delete" and not isinstance(content, dict):
            content = {"metadata": {"namespace": parts[0], "name": "/".join(parts[2:])}}
        if not self._apply(kind, message.operation, content):
            log.warning("edgemesh: %s %s carries no Kubernetes object", message.operation, message.resource)
            return
        ctx.metrics.inc("kubeedge_edgemesh_updates_total", kind=kind, help="Service/Endpoints changes applied")
        if kind == "service" and self.proxy_enabled:
            await self._reconcile_proxies(ctx)

    # -- DNS ------------------------------------------------------------------------------------------

    async def _serve_dns(self, ctx: Context, *, task_status: trio.TaskStatus[None]) -> None:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with sock:
            await sock.bind((self.dns_address, self.dns_port))
            self.dns_port = sock.getsockname()[1]
            log.info(
                "edgemesh: DNS on %s:%d for *.svc.%s", self.dns_address, self.dns_port, self.registry.cluster_domain
            )
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    data, peer = await sock.recvfrom(4096)
                    try:
                        reply = self.answer(data)
                    except ValueError as exc:
                        log.debug("edgemesh: malformed DNS query from %s dropped: %s", peer, exc)
                        continue
                    if reply is not None:
                        await sock.sendto(reply, peer)
                        ctx.metrics.inc("kubeedge_edgemesh_dns_queries_total", answer="local")
                    elif self.upstream:
                        nursery.start_soon(self._forward, sock, data, peer)
                        ctx.metrics.inc("kubeedge_edgemesh_dns_queries_total", answer="upstream")

    def answer(self, data: bytes) -> bytes | None:
        """The reply to a DNS query we answer ourselves, or None to forward it upstream.

        Raises ValueError for a datagram that is not a DNS query.
        """
        import dns.exception
        import dns.flags
        import dns.message
        import dns.rcode
        import dns.rdataclass
        import dns.rdatatype
        import dns.rrset

        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException as exc:
            raise ValueError(str(exc)) from None
        if not query.question:
            return bytes(dns.message.make_response(query).to_wire())
        question = query.question[0]
        qname = question.name.to_text()
        service = self.registry.lookup(qname)
        if service is None and not self.registry.in_cluster_domain(qname):
            return None if self.upstream else self._servfail(query)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if service is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.A:
            addresses = self.registry.ready_ips(service) if service.headless else [self.service_address(service)]
            if addresses:
                response.answer.append(
                    dns.rrset.from_text(question.name, self.ttl, dns.rdataclass.IN, dns.rdatatype.A, *addresses)
                )
        return bytes(response.to_wire())

    def service_address(self, service: Service) -> str:
        # With the proxy on, the service's ports are served on the proxy's address on this node.
        return self.proxy_address if self.proxy_enabled else service.cluster_ip

    @staticmethod
    def _servfail(query: Any) -> bytes:
        import dns.message
        import dns.rcode

        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.SERVFAIL)
        return bytes(response.to_wire())

    async def _forward(self, sock: trio.socket.SocketType, data: bytes, peer: Any) -> None:
        assert self.upstream is not None
        host, _, port = self.upstream.partition(":")
        with trio.move_on_after(UPSTREAM_TIMEOUT):
            with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as upstream:
                await upstream.connect((host, int(port or 53)))
                await upstream.send(data)
                reply = await upstream.recv(65535)
                await sock.sendto(reply, peer)
                return
        log.debug("edgemesh: upstream %s did not answer", self.upstream)

    # -- proxy ----------------------------------------------------------------------------------------

    async def _reconcile_proxies(self, ctx: Context) -> None:
        assert self._listen_nursery is not None
        wanted: dict[tuple[str, str, str], ServicePort] = {}
        for (namespace, name), service in self.registry.services.items():
            if service.headless:
                continue  # as kube-proxy: a headless service's clients go to its endpoints' addresses directly
            for port in service.ports:
                if port.protocol == "TCP":
                    wanted[(namespace, name, port.name or str(port.port))] = port
        for key in list(self._listeners):
            listen_port, scope = self._listeners[key]
            if key not in wanted or wanted[key].port + self.port_offset != listen_port:
                scope.cancel()  # stops accepting; established connections live on in their own tasks
                del self._listeners[key]
                self.proxy_ports.pop(key, None)
        for key, port in wanted.items():
            if key not in self._listeners:
                try:
                    await self._listen_nursery.start(self._listen, ctx, key, port)
                except OSError as exc:
                    log.error("edgemesh: cannot proxy %s/%s port %d: %s", key[0], key[1], port.port, exc)

    async def _listen(
        self, ctx: Context, key: tuple[str, str, str], port: ServicePort, *, task_status: trio.TaskStatus[None]
    ) -> None:
        listen_port = port.port + self.port_offset
        listeners = await trio.open_tcp_listeners(listen_port, host=self.proxy_address)
        with trio.CancelScope() as scope:
            self._listeners[key] = (listen_port, scope)
            self.proxy_ports[key] = listeners[0].socket.getsockname()[1]
            task_status.started()
            async with listeners[0]:
                while True:
                    stream = await listeners[0].accept()
                    assert self._connection_nursery is not None
                    self._connection_nursery.start_soon(self._relay, ctx, key, port, stream)

    async def _relay(
        self, ctx: Context, key: tuple[str, str, str], port: ServicePort, client: trio.SocketStream
    ) -> None:
        namespace, name, _ = key
        service = self.registry.services.get((namespace, name))
        backends = self.registry.backends(service, port) if service else []
        async with client:
            for host, target in backends:  # round robin start, then each other ready endpoint in turn
                try:
                    with trio.fail_after(CONNECT_TIMEOUT):
                        upstream = await trio.open_tcp_stream(host, target)
                except (OSError, trio.TooSlowError) as exc:
                    log.info("edgemesh: %s/%s endpoint %s:%d unreachable: %s", namespace, name, host, target, exc)
                    continue
                ctx.metrics.inc("kubeedge_edgemesh_proxy_connections_total", service=f"{namespace}/{name}")
                async with upstream:
                    async with trio.open_nursery() as pipes:
                        pipes.start_soon(_pipe, client, upstream)
                        pipes.start_soon(_pipe, upstream, client)
                return
            log.warning("edgemesh: no ready endpoint for %s/%s port %s", namespace, name, port.name or port.port)


async def _pipe(source: trio.SocketStream, sink: trio.SocketStream) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
        await sink.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass

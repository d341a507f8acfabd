"""edgemesh: DNS answered with dnspython's own client, and a TCP echo service reached through the proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import trio
import trio.testing

from kubeedge import BaseModule, Context, Kernel, Message
from kubeedge.profile import build_profile


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service(name: str, cluster_ip: str, port: int, target: Any = 80, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterIP": cluster_ip, "ports": [{"name": "web", "port": port, "targetPort": target}]},
    }


def endpoints(name: str, *backends: tuple[str, int], namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": namespace},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "web", "port": port}]} for ip, port in backends],
    }


@asynccontextmanager
async def edge(tmp_path: Path, upstream: str = "", extra: dict[str, Any] | None = None) -> AsyncIterator[Kernel]:
    dns_config: dict[str, Any] = {"address": "127.0.0.1", "port": 0}
    if upstream:
        dns_config["upstream"] = upstream
    modules = {"edgemesh": {"dns": dns_config, "proxy": {"address": "127.0.0.1"}}, **(extra or {})}
    kernel = Kernel.from_profile(build_profile({"role": "edge", "modules": modules}, data_dir=tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(kernel.run)
        yield kernel
        kernel.stop()


def mesh(kernel: Kernel) -> Any:
    return next(m for m in kernel.modules if m.name == "edgemesh")


async def put(kernel: Kernel, kind: str, obj: dict[str, Any], operation: str = "insert") -> None:
    meta = obj["metadata"]
    await kernel.bus.send(
        "edgemesh",
        Message(
            source="metamanager",
            group="meta",
            operation=operation,
            resource=f"{meta['namespace']}/{kind}/{meta['name']}",
            content=obj,
        ),
    )
    await trio.testing.wait_all_tasks_blocked()  # edgemesh has applied it


async def ask(kernel: Kernel, name: str, rdtype: str = "A") -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    return await dns.asyncquery.udp(query, "127.0.0.1", port=mesh(kernel).dns_port, timeout=3)


def a_records(response: dns.message.Message) -> list[str]:
    return sorted(rr.address for rrset in response.answer for rr in rrset if rrset.rdtype == dns.rdatatype.A)


async def test_headless_service_resolves_to_its_ready_endpoints(tmp_path: Path) -> None:
    async with edge(tmp_path) as kernel:
        await put(kernel, "service", service("nginx-svc", "None", 18050))
        await put(kernel, "endpoints", endpoints("nginx-svc", ("10.0.0.7", 18050), ("10.0.0.8", 18050)))
        response = await ask(kernel, "nginx-svc.default.svc.cluster.local")
        assert response.rcode() == dns.rcode.NOERROR
        assert a_records(response) == ["10.0.0.7", "10.0.0.8"]
        await put(kernel, "endpoints", endpoints("nginx-svc", ("10.0.0.8", 18050)), operation="update")
        assert a_records(await ask(kernel, "nginx-svc.default.svc.cluster.local.")) == ["10.0.0.8"]


async def test_clusterip_service_resolves_to_the_proxy_and_unknown_names_are_nxdomain(tmp_path: Path) -> None:
    async with edge(tmp_path) as kernel:
        await put(kernel, "service", service("api", "10.96.0.20", free_port(), namespace="shop"))
        assert a_records(await ask(kernel, "api.shop.svc.cluster.local")) == ["127.0.0.1"]
        missing = await ask(kernel, "nope.shop.svc.cluster.local")
        assert missing.rcode() == dns.rcode.NXDOMAIN
        await put(kernel, "service", service("api", "10.96.0.20", 1, namespace="shop"), operation="delete")
        assert (await ask(kernel, "api.shop.svc.cluster.local")).rcode() == dns.rcode.NXDOMAIN


async def test_other_names_are_forwarded_upstream(tmp_path: Path) -> None:
    # A real DNS server on loopback stands upstream and answers example.org.
    upstream = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await upstream.bind(("127.0.0.1", 0))
    port = upstream.getsockname()[1]

    async def serve_upstream() -> None:
        import dns.rrset

        while True:
            data, peer = await upstream.recvfrom(4096)
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            response.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", "93.184.216.34"))
            await upstream.sendto(response.to_wire(), peer)

    with upstream:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_upstream)
            async with edge(tmp_path, upstream=f"127.0.0.1:{port}") as kernel:
                assert a_records(await ask(kernel, "example.org")) == ["93.184.216.34"]
                metrics = kernel.ctx.metrics
                assert metrics.value("kubeedge_edgemesh_dns_queries_total", answer="upstream") == 1
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def echo_server(host: str, tag: str) -> AsyncIterator[int]:
    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            while data := await stream.receive_some(4096):
                await stream.send_all(tag.encode() + b":" + data)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host=host))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def roundtrip(stream: trio.SocketStream, text: str) -> str:
    await stream.send_all(text.encode())
    return (await stream.receive_some(4096)).decode()


async def test_proxy_balances_and_follows_endpoints_without_dropping_connections(tmp_path: Path) -> None:
    service_port = free_port()
    async with echo_server("127.0.0.2", "A") as port_a, echo_server("127.0.0.3", "B") as port_b:
        async with edge(tmp_path) as kernel:
            await put(kernel, "service", service("echo", "10.96.0.9", service_port, target="web"))
            await put(kernel, "endpoints", endpoints("echo", ("127.0.0.2", port_a), ("127.0.0.3", port_b)))
            first = await trio.open_tcp_stream("127.0.0.1", service_port)
            second = await trio.open_tcp_stream("127.0.0.1", service_port)
            replies = sorted([await roundtrip(first, "hi"), await roundtrip(second, "hi")])
            assert replies == ["A:hi", "B:hi"]  # one connection to each ready endpoint
            on_a = first if (await roundtrip(first, "who")).startswith("A") else second
            # Endpoint A goes away from the service: new connections go to B only ...
            await put(kernel, "endpoints", endpoints("echo", ("127.0.0.3", port_b)), operation="update")
            for _ in range(3):
                async with await trio.open_tcp_stream("127.0.0.1", service_port) as fresh:
                    assert await roundtrip(fresh, "x") == "B:x"
            # ... while the connection already established to A keeps working.
            assert await roundtrip(on_a, "still") == "A:still"
            await first.aclose()
            await second.aclose()
            assert kernel.ctx.metrics.value("kubeedge_edgemesh_proxy_connections_total", service="default/echo") == 5


class Uplink(BaseModule):
    """Stands where edgehub would be: takes metamanager's ACKs, so the store can be fed as the cloud does."""

    name = "websocket"
    group = "hub"

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for _ in ctx.bus.channel(self.name):
            pass


async def test_services_come_back_from_the_local_store_after_a_restart(tmp_path: Path) -> None:
    from kubeedge import Plugins

    def node() -> Kernel:
        profile = build_profile(
            {"role": "edge", "modules": {"metamanager": {}, "edgemesh": {"dns": {"address": "127.0.0.1", "port": 0}}}},
            data_dir=tmp_path,
        )
        plugins = Plugins()
        from kubeedge.kernel import resolve

        plugins, modules = resolve(profile, plugins)
        return Kernel(profile, plugins, [Uplink(), *modules])

    kernel = node()
    async with trio.open_nursery() as nursery:
        await nursery.start(kernel.run)
        for kind, obj in (("service", service("db", "None", 5432)), ("endpoints", endpoints("db", ("10.1.1.1", 5432)))):
            await kernel.bus.send(
                "metamanager",
                Message(
                    source="edgecontroller",
                    group="resource",
                    operation="insert",
                    resource=f"default/{kind}/db",
                    resource_version="5",
                    content=obj,
                ),
            )
        with trio.fail_after(5):
            while not mesh(kernel).registry.endpoints:
                await trio.testing.wait_all_tasks_blocked()
                await trio.sleep(0.01)
        kernel.stop()
    restarted = node()  # the cloud is not there; only the local store is
    async with trio.open_nursery() as nursery:
        await nursery.start(restarted.run)
        assert a_records(await ask(restarted, "db.default.svc.cluster.local")) == ["10.1.1.1"]
        restarted.stop()


@pytest.mark.parametrize("junk", [b"", b"\x00\x01", b"not dns at all"])
async def test_malformed_queries_are_dropped_and_the_server_keeps_answering(tmp_path: Path, junk: bytes) -> None:
    async with edge(tmp_path) as kernel:
        await put(kernel, "service", service("api", "10.96.0.20", free_port()))
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.sendto(junk, ("127.0.0.1", mesh(kernel).dns_port))
        assert a_records(await ask(kernel, "api.default.svc.cluster.local")) == ["127.0.0.1"]

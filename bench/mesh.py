"""edgemesh: DNS queries/s, and TCP throughput through the proxy beside a direct connection (same run).

Prints one JSON object: dns_qps, proxy_mb_per_s, direct_mb_per_s, proxy_ratio_to_direct.
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import time
from functools import partial
from typing import Any

import dns.message
import trio
import trio.testing

from kubeedge import Kernel, Message
from kubeedge.profile import build_profile

CHUNK = b"x" * 65536


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def dns_rate(port: int, seconds: float, concurrency: int = 16) -> float:
    wire = dns.message.make_query("web.default.svc.cluster.local", "A").to_wire()
    answered = 0
    deadline = trio.current_time() + seconds

    async def client() -> None:
        nonlocal answered
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.connect(("127.0.0.1", port))
            while trio.current_time() < deadline:
                await sock.send(wire)
                await sock.recv(4096)
                answered += 1

    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(client)
    return answered / (time.perf_counter() - began)


async def throughput(port: int, megabytes: int) -> float:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    total = megabytes * 1024 * 1024
    began = time.perf_counter()
    async with stream:
        sent = 0
        while sent < total:
            await stream.send_all(CHUNK)
            sent += len(CHUNK)
        await stream.send_eof()
        await stream.receive_some(16)  # the sink's byte count arrives once it has everything
    return megabytes / (time.perf_counter() - began)


async def main(seconds: float, megabytes: int) -> dict[str, Any]:
    async def sink(stream: trio.SocketStream) -> None:
        received = 0
        async with stream:
            while data := await stream.receive_some(262144):
                received += len(data)
            await stream.send_all(str(received).encode())

    service_port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        profile = build_profile(
            {"role": "edge", "modules": {"edgemesh": {"dns": {"address": "127.0.0.1", "port": 0}}}}, data_dir=data_dir
        )
        kernel = Kernel.from_profile(profile)
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, sink, 0, host="127.0.0.1"))
            sink_port = listeners[0].socket.getsockname()[1]
            await nursery.start(kernel.run)
            mesh = next(m for m in kernel.modules if m.name == "edgemesh")
            for kind, obj in (
                (
                    "service",
                    {
                        "metadata": {"name": "web", "namespace": "default"},
                        "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": service_port, "targetPort": sink_port}]},
                    },
                ),
                (
                    "endpoints",
                    {
                        "metadata": {"name": "web", "namespace": "default"},
                        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": sink_port}]}],
                    },
                ),
            ):
                await kernel.bus.send(
                    "edgemesh", Message(operation="insert", resource=f"default/{kind}/web", content=obj)
                )
            await trio.testing.wait_all_tasks_blocked()  # edgemesh has applied both and listens
            qps = await dns_rate(mesh.dns_port, seconds)
            direct = max([await throughput(sink_port, megabytes) for _ in range(2)])
            proxied = max([await throughput(service_port, megabytes) for _ in range(2)])
            kernel.stop()
            nursery.cancel_scope.cancel()
    return {
        "dns_qps": round(qps),
        "proxy_mb_per_s": round(proxied, 1),
        "direct_mb_per_s": round(direct, 1),
        "proxy_ratio_to_direct": round(proxied / direct, 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="DNS load duration")
    parser.add_argument("--megabytes", type=int, default=256, help="bytes pushed per throughput run")
    options = parser.parse_args()
    print(json.dumps(trio.run(main, options.seconds, options.megabytes)))

"""The cloud-edge link under load: N edge nodes (real websocket + mutual-TLS clients in worker
processes) against one cloudhub, in this process.

Messages are fed to cloudhub over the bus exactly as controllers do, with a bounded number in flight;
each simulated edge acknowledges what it receives as metamanager does. Measured: acknowledged
messages/s cloud -> edge, latency from enqueue to ACK (p50/p99), and the cloud's RSS per connected node
(idle connections). Prints one JSON object: nodes, acked_msgs_per_s, p50_ms, p99_ms, rss_kb_per_node
(and the run's parameters).

    .venv/bin/python bench/link.py                 # 100 nodes, ~30 s
    .venv/bin/python bench/link.py --nodes 1000
    .venv/bin/python bench/link.py --nodes 10000 --idle   # connect and measure memory only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import ssl
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio

PROJECT = "e632aba927ea4ac2b575ec1603d56f10"
# metamanager's ACK, as bytes on the wire (built by hand: the simulated edges must be cheap)
ACK_HEAD = '{"header":{"msg_id":"a","parent_msg_id":"'
ACK_TAIL = '"},"route":{"source":"metamanager","group":"resource","operation":"response"},"content":"OK"}'


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- worker: simulated edge nodes ------------------------------------------------------------------------


async def worker(port: int, pki_dir: Path, first: int, count: int) -> None:
    from trio_websocket import open_websocket

    from kubeedge.plugins.common import pki

    raise_nofile()
    ca = pki.CA.load(pki_dir)
    connect_slots = trio.Semaphore(32)

    def context(node: str) -> ssl.SSLContext:
        csr, key = pki.make_csr(node)
        cert = pki.sign_csr(ca, csr)
        ctx = ssl.create_default_context(cadata=ca.der)
        directory = Path(tempfile.mkdtemp(prefix="bench-node-"))
        (directory / "c.crt").write_bytes(pki.cert_pem(cert))
        (directory / "c.key").write_bytes(pki.key_pem(key))
        ctx.load_cert_chain(str(directory / "c.crt"), str(directory / "c.key"))
        return ctx

    async def node(index: int) -> None:
        name = f"bench-{index}"
        ctx = context(name)
        while True:
            try:
                async with connect_slots:
                    ws_cm = open_websocket(
                        "127.0.0.1",
                        port,
                        f"/{PROJECT}/{name}/events",
                        use_ssl=ctx,
                        extra_headers=[(b"node_id", name.encode()), (b"project_id", PROJECT.encode())],
                        connect_timeout=60,
                        receive_buffer_size=None,
                    )
                    ws = await ws_cm.__aenter__()
                try:
                    while True:
                        frame = await ws.get_message()
                        header = json.loads(frame)["header"]
                        await ws.send_message(ACK_HEAD + header["msg_id"] + ACK_TAIL)
                finally:
                    await ws_cm.__aexit__(None, None, None)
            except Exception as exc:
                print(f"worker: node {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
                await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        for index in range(first, first + count):
            nursery.start_soon(node, index)


# -- the cloud and the load ---------------------------------------------------------------------------------


async def cloud(args: argparse.Namespace) -> dict[str, Any]:
    from kubeedge import Kernel, Message, Plugins
    from kubeedge.plugins.cloudhub.hub import CloudHub
    from kubeedge.profile import build_profile

    raise_nofile()
    data_dir = Path(tempfile.mkdtemp(prefix="bench-link-"))
    hub = CloudHub(
        {
            "address": "127.0.0.1",
            "port": 0,
            "httpsPort": 0,
            "nodeLimit": args.nodes + 10,
            "keepaliveInterval": 3600,
            "window": 64,
        }
    )
    profile = build_profile({"role": "cloud", "modules": {}}, data_dir=data_dir)
    kernel = Kernel(profile, Plugins(), [hub])
    latencies: list[float] = []
    measuring = False

    def on_ack(entry: Any, now: float) -> None:
        if measuring:
            latencies.append(now - entry.enqueued)
        slots.release()

    slots = trio.Semaphore(args.inflight)
    hub.on_ack = on_ack
    procs: list[subprocess.Popen[bytes]] = []
    result: dict[str, Any] = {}
    stopping = 0.0
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(kernel.run, handle_signals=False))
        base_rss = rss_kb()
        per = -(-args.nodes // args.workers)
        for w in range(args.workers):
            first, count = w * per, min(per, args.nodes - w * per)
            if count <= 0:
                break
            procs.append(
                subprocess.Popen(  # noqa: ASYNC220 - started once, before the measurement
                    [sys.executable, __file__, "--worker", str(hub.port), str(data_dir / "pki"), str(first), str(count)]
                )
            )
        try:
            began = time.perf_counter()
            with trio.fail_after(args.connect_timeout):
                while len(hub.sessions) < args.nodes:
                    await hub.session_changed.wait()
            connect_s = time.perf_counter() - began
            await trio.sleep(1)  # let the handshake garbage settle before measuring memory
            connected_rss = rss_kb()
            result = {
                "nodes": args.nodes,
                "rss_kb_per_node": round((connected_rss - base_rss) / args.nodes, 1),
                "connect_s": round(connect_s, 2),
            }
            if args.idle:
                result.update(acked_msgs_per_s=None, p50_ms=None, p99_ms=None)
            else:
                names = list(hub.sessions)
                seq = 0

                async def feed(until: float) -> None:
                    nonlocal seq
                    while time.perf_counter() < until:
                        await slots.acquire()
                        seq += 1
                        node = names[seq % len(names)]
                        await kernel.bus.send(
                            "cloudhub",
                            Message(
                                source="edgecontroller",
                                group="resource",
                                operation="update",
                                resource=f"node/{node}/default/configmap/m{seq}",
                                resource_version=str(seq),
                                content={"metadata": {"name": f"m{seq}", "uid": f"u{seq}"}, "data": {"k": "v" * 100}},
                            ),
                        )

                await feed(time.perf_counter() + args.warmup)
                measuring = True
                acked_before = hub.acked
                start = time.perf_counter()
                cpu_before = time.process_time()
                await feed(start + args.duration)
                elapsed = time.perf_counter() - start
                cloud_cpu = (time.process_time() - cpu_before) / elapsed
                acked = hub.acked - acked_before
                measuring = False
                latencies.sort()

                def pct(p: float) -> float:
                    return (
                        round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)
                        if latencies
                        else 0.0
                    )

                result.update(
                    acked_msgs_per_s=round(acked / elapsed, 1),
                    p50_ms=pct(0.50),
                    p99_ms=pct(0.99),
                    inflight=args.inflight,
                    duration_s=args.duration,
                    cloud_cpu_share=round(cloud_cpu, 2),
                    # throughput per second of cloud CPU: comparable between runs on a busy machine
                    acked_msgs_per_cloud_cpu_s=round(acked / elapsed / cloud_cpu, 1) if cloud_cpu else None,
                )
        finally:
            stopping = time.perf_counter()
            kernel.stop()  # the cloud stops first, with every node still connected, as on SIGTERM
    shutdown_s = time.perf_counter() - stopping
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=10)
    result["shutdown_s"] = round(shutdown_s, 2)
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        port, pki_dir, first, count = int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        try:
            trio.run(worker, port, pki_dir, first, count)
        except KeyboardInterrupt:
            pass
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="processes holding the simulated edges")
    parser.add_argument("--inflight", type=int, default=256, help="messages fed and not yet acknowledged")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connect-timeout", type=float, default=600.0)
    parser.add_argument("--idle", action="store_true", help="only connect the nodes and measure memory")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    result = trio.run(cloud, args)
    print(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

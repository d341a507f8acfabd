"""What the SPDY front (plugins/common/front.py) costs a plain HTTPS request, against hypercorn serving alone.

cloudstream's kubelet API and the embedded API server now accept connections in the front, which finishes
TLS, reads the request head and hands every non-SPDY connection to hypercorn's own connection handler in the
same process. This serves one small ASGI app both ways on 127.0.0.1 with TLS (a certificate from a fresh
CA), alternating rounds so machine load hits both alike:

- ``hypercorn_mb_per_s`` / ``front_mb_per_s``: one streamed GET of ``--mb`` MB (64 KiB body chunks, as
  ``kubectl logs`` is relayed), best of ``--rounds``;
- ``hypercorn_request_p50_ms`` / ``front_request_p50_ms``: a small GET on a new connection each time
  (TCP + TLS handshake + head), median of ``--requests`` per side.

Run: ``.venv/bin/python bench/front.py [--mb 50] [--rounds 3] [--requests 200]``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import ssl
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHUNK = b"x" * 65536


def make_app(total: int) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["path"] == "/big":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            sent = 0
            while sent < total:
                await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
                sent += len(CHUNK)
            await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})

    return app


def credentials(directory: Path) -> tuple[str, str, str]:
    from kubeedge.plugins.common import pki

    ca = pki.CA.ensure(directory)
    cert, key = pki.issue_server_cert(ca, ["127.0.0.1"], common_name="bench")
    (directory / "server.crt").write_bytes(pki.cert_pem(cert))
    pki.write_private(directory / "server.key", pki.key_pem(key))
    return str(directory / "ca.crt"), str(directory / "server.crt"), str(directory / "server.key")


async def serve(kind: str, app: Any, cert: str, key: str, *, task_status: trio.TaskStatus[Any]) -> None:
    import hypercorn.trio
    from hypercorn.config import Config

    from kubeedge.plugins.common import front

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.certfile, config.keyfile = cert, key
    config.alpn_protocols = ["http/1.1"]
    config.accesslog = None
    config.errorlog = logging.getLogger("bench.front")
    config.graceful_timeout = 0.5
    stop = trio.Event()

    async def never(head: Any, stream: Any) -> None:
        raise AssertionError("no upgrades in this bench")

    async with trio.open_nursery() as nursery:
        if kind == "front":
            server = partial(front.serve, app, config, upgrade=never, shutdown_trigger=stop.wait)
        else:
            server = partial(hypercorn.trio.serve, app, config, shutdown_trigger=stop.wait)
        binds = await nursery.start(server)
        task_status.started((int(binds[0].rsplit(":", 1)[1]), stop))


async def throughput(port: int, context: ssl.SSLContext) -> float:
    import httpx

    async with httpx.AsyncClient(verify=context, timeout=60) as client:
        start = time.perf_counter()
        received = 0
        async with client.stream("GET", f"https://127.0.0.1:{port}/big") as reply:
            async for chunk in reply.aiter_raw():
                received += len(chunk)
        return received / (time.perf_counter() - start) / 1e6


async def request_ms(port: int, context: ssl.SSLContext) -> float:
    start = time.perf_counter()
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, context, server_hostname="127.0.0.1", https_compatible=True)
    await stream.send_all(b"GET /small HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    body = b""
    while data := await stream.receive_some():
        body += data
    await stream.aclose()
    assert body.endswith(b"ok"), body
    return (time.perf_counter() - start) * 1000


async def main(args: argparse.Namespace) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="ke-bench-front-"))
    ca, cert, key = await trio.to_thread.run_sync(credentials, directory)
    context = ssl.create_default_context(cafile=ca)
    app = make_app(args.mb * 1_000_000)
    rates: dict[str, list[float]] = {"hypercorn": [], "front": []}
    latencies: dict[str, list[float]] = {"hypercorn": [], "front": []}
    async with trio.open_nursery() as nursery:
        servers = {kind: await nursery.start(serve, kind, app, cert, key) for kind in ("hypercorn", "front")}
        for _ in range(args.rounds):
            for kind, (port, _stop) in servers.items():
                rates[kind].append(await throughput(port, context))
        for _ in range(args.requests):
            for kind, (port, _stop) in servers.items():
                latencies[kind].append(await request_ms(port, context))
        for _port, stop in servers.values():
            stop.set()
    return {
        "hypercorn_mb_per_s": round(max(rates["hypercorn"]), 1),
        "front_mb_per_s": round(max(rates["front"]), 1),
        "hypercorn_request_p50_ms": round(statistics.median(latencies["hypercorn"]), 2),
        "front_request_p50_ms": round(statistics.median(latencies["front"]), 2),
        "mb": args.mb,
        "requests": args.requests,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200)
    print(json.dumps(trio.run(main, parser.parse_args())))

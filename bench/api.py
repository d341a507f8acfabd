"""Benchmark of the embedded apiserver: creates per second, listing 10,000 objects, watch fan-out latency.

The apiserver runs as its own process (``kubeedge run`` with a profile holding only ``apiserver``), over
HTTPS with its bearer token, as kubectl and the controllers use it; the load comes from this process
(httpx under trio). Printed beside Kubernetes' API SLOs: p99 of mutating calls <= 1 s, a LIST of a
collection <= 30 s (the scalability SLIs of sig-scalability).

    .venv/bin/python bench/api.py [--objects 10000] [--watchers 100] [--updates 100] [--concurrency 32]

Prints one JSON object: ``creates_per_s``, ``list_10k_s``, ``watch_p99_ms`` and the details.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio
import yaml


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def start_server(data_dir: Path) -> tuple[trio.Process, str, str, ssl.SSLContext]:
    profile = data_dir / "profile.yaml"
    profile.write_text(
        yaml.safe_dump(
            {
                "role": "cloud",
                "node": {"name": "bench"},
                "logLevel": "warning",
                "modules": {"apiserver": {"port": 0, "scheduler": False, "watchBuffer": 100000}},
            }
        )
    )
    command = [sys.executable, "-m", "kubeedge", "run", "--profile", str(profile), "--data-dir", str(data_dir)]
    env = {**os.environ, "XDG_CACHE_HOME": str(data_dir / "cache")}
    process = await trio.lowlevel.open_process(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kubeconfig = data_dir / "kubeconfig.yaml"
    with trio.fail_after(30):
        while True:
            if kubeconfig.exists():
                config = yaml.safe_load(kubeconfig.read_text())
                if config:
                    break
            await trio.sleep(0.05)
    server = config["clusters"][0]["cluster"]["server"]
    token = config["users"][0]["user"]["token"]
    context = ssl.create_default_context(cafile=str(data_dir / "pki" / "ca.crt"))
    with trio.fail_after(30):
        while True:
            try:
                async with httpx.AsyncClient(verify=context) as probe:
                    if (await probe.get(f"{server}/readyz")).status_code == 200:
                        break
            except httpx.TransportError:
                await trio.sleep(0.05)
    return process, server, token, context


async def create_objects(make_client: Any, namespace: str, count: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    send, receive = trio.open_memory_channel[int](count)
    for index in range(count):
        send.send_nowait(index)
    send.close()

    async def worker() -> None:
        # One client (one connection) per worker: httpx's shared pool scans every connection per request.
        async with make_client() as client:
            await _create_loop(client)

    async def _create_loop(client: httpx.AsyncClient) -> None:
        async for index in receive:
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"cm-{index:05d}"},
                "data": {"index": str(index), "payload": "x" * 64},
            }
            began = time.perf_counter()
            response = await client.post(f"/api/v1/namespaces/{namespace}/configmaps", json=body)
            latencies.append(time.perf_counter() - began)
            if response.status_code != 201:
                raise RuntimeError(f"create failed: {response.status_code} {response.text}")

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return latencies


async def watch_fanout(
    server: str, token: str, context: ssl.SSLContext, namespace: str, watchers: int, updates: int
) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=watchers + 4)
    async with httpx.AsyncClient(
        base_url=server, verify=context, headers=headers, limits=limits, timeout=httpx.Timeout(60.0)
    ) as client:
        created = await client.post(
            f"/api/v1/namespaces/{namespace}/configmaps",
            json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ticker"}, "data": {"n": "0"}},
        )
        start_rv = created.json()["metadata"]["resourceVersion"]
        sent: dict[str, float] = {}
        latencies: list[float] = []
        ready = trio.Semaphore(0)
        done = trio.Event()
        remaining = [watchers]

        async def watcher() -> None:
            params = {"watch": "1", "resourceVersion": start_rv, "timeoutSeconds": "120"}
            async with (
                httpx.AsyncClient(base_url=server, verify=context, headers=headers, timeout=httpx.Timeout(60.0)) as own,
                own.stream("GET", f"/api/v1/namespaces/{namespace}/configmaps", params=params) as stream,
            ):
                ready.release()
                seen = 0
                async for line in stream.aiter_lines():
                    if not line.strip():
                        continue
                    arrived = time.perf_counter()
                    event = json.loads(line)
                    value = event["object"]["data"]["n"]
                    latencies.append(arrived - sent[value])
                    seen += 1
                    if seen == updates:
                        break
            remaining[0] -= 1
            if remaining[0] == 0:
                done.set()

        async with trio.open_nursery() as nursery:
            for _ in range(watchers):
                nursery.start_soon(watcher)
            for _ in range(watchers):
                await ready.acquire()
            await trio.sleep(0.2)  # let every stream's request reach the server before the first change
            for number in range(1, updates + 1):
                value = str(number)
                sent[value] = time.perf_counter()
                response = await client.patch(
                    f"/api/v1/namespaces/{namespace}/configmaps/ticker",
                    json={"data": {"n": value}},
                    headers={"Content-Type": "application/merge-patch+json"},
                )
                response.raise_for_status()
                await trio.sleep(0.02)
            with trio.fail_after(60):
                await done.wait()
        return latencies


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kubeedge-bench-api-") as tmp:
        data_dir = Path(tmp)
        process, server, token, context = await start_server(data_dir)
        try:
            headers = {"Authorization": f"Bearer {token}"}
            limits = httpx.Limits(max_connections=args.concurrency)
            async with httpx.AsyncClient(
                base_url=server, verify=context, headers=headers, limits=limits, timeout=httpx.Timeout(60.0)
            ) as client:
                for namespace in ("bench", "fanout"):
                    await client.post("/api/v1/namespaces", json={"metadata": {"name": namespace}})
                began = time.perf_counter()
                create_latencies = await create_objects(
                    partial(
                        httpx.AsyncClient, base_url=server, verify=context, headers=headers, timeout=httpx.Timeout(60.0)
                    ),
                    "bench",
                    args.objects,
                    args.concurrency,
                )
                create_seconds = time.perf_counter() - began
                list_times = []
                for _ in range(3):
                    began = time.perf_counter()
                    response = await client.get("/api/v1/namespaces/bench/configmaps")
                    items = response.json()["items"]
                    list_times.append(time.perf_counter() - began)
                    assert len(items) == args.objects, len(items)
                began = time.perf_counter()
                await client.get("/api/v1/namespaces/bench/configmaps", params={"limit": "500"})
                page_seconds = time.perf_counter() - began
            watch_latencies = await watch_fanout(server, token, context, "fanout", args.watchers, args.updates)
        finally:
            process.terminate()
            with trio.move_on_after(10):
                await process.wait()
    return {
        "creates_per_s": round(args.objects / create_seconds, 1),
        "list_10k_s": round(statistics.median(list_times), 3),
        "watch_p99_ms": round(percentile(watch_latencies, 0.99) * 1000, 2),
        "create_p50_ms": round(percentile(create_latencies, 0.5) * 1000, 2),
        "create_p99_ms": round(percentile(create_latencies, 0.99) * 1000, 2),
        "list_page_500_s": round(page_seconds, 4),
        "watch_p50_ms": round(percentile(watch_latencies, 0.5) * 1000, 2),
        "watch_events": len(watch_latencies),
        "objects": args.objects,
        "watchers": args.watchers,
        "concurrency": args.concurrency,
        "kubernetes_slo": {"mutating_p99_s": 1.0, "list_s": 30.0},
        "within_slo": percentile(create_latencies, 0.99) <= 1.0 and statistics.median(list_times) <= 30.0,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=10000)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=32)
    print(json.dumps(trio.run(main, parser.parse_args())))

"""Memory under steady traffic: does a node grow? Real cloud and edge processes, as `kubeedge demo` runs them.

A Device is applied; then a publisher sends twin updates over MQTT to the edge's broker at ``--rate``
per second for ``--seconds`` (every one goes edge twin -> cloudhub -> devicecontroller -> the API). The
RSS of both processes is sampled every second. After a warm-up (the first quarter of the run), a
least-squares line through the samples gives the growth rate; a node that leaks shows a steady slope,
one that does not stays flat within the allocator's noise. Edge memory growth under load is one of the
things operators of KubeEdge's peers report (edgeHub/edgeAgent, OpenYurt).

Prints one JSON object: ``edge_rss_start_mb``, ``edge_rss_end_mb``, ``edge_growth_mb_per_hour``, the same
for the cloud, both RSS series (eight points), ``updates_sent``, ``last_value_reported`` (the API showed the
last value sent) and ``last_value_after_s`` (how long after the load stopped), ``seconds``, ``rate``.

    .venv/bin/python bench/soak.py [--seconds 120] [--rate 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

from kubeedge.mappers.sdk import twin
from kubeedge.mappers.sdk.mqtt import MqttClient
from kubeedge.plugins.demo import manifests
from kubeedge.plugins.demo.run import DEVICE_GROUP, DEVICE_PLURAL, DEVICE_VERSION, Demo, api, join_edge, start_cloud

DEVICE = "soak-thermostat"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per hour."""
    n = len(samples)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / n
    mean_m = sum(m for _, m in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    cov = sum((t - mean_t) * (m - mean_m) for t, m in samples)
    return cov / var * 3600 if var else 0.0


async def main(seconds: float, rate: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kubeedge-soak-") as root:
        demo = Demo(root=Path(root), node="edge-soak", out=sys.stderr)  # stdout carries only the JSON
        async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
            try:
                await start_cloud(demo)
                await join_edge(demo, in_process_mapper=False)  # the publisher below stands in for the mapper
                clients = api(demo)
                await trio.to_thread.run_sync(
                    lambda: clients.custom.create_namespaced_custom_object(
                        DEVICE_GROUP, DEVICE_VERSION, "default", "devicemodels", manifests.device_model()
                    )
                )
                body = manifests.device(demo.node, 1, cycle_ns=3600 * 1_000_000_000)  # port 1: only MQTT moves it
                body["metadata"]["name"] = DEVICE
                await trio.to_thread.run_sync(
                    lambda: clients.custom.create_namespaced_custom_object(
                        DEVICE_GROUP, DEVICE_VERSION, "default", DEVICE_PLURAL, body
                    )
                )
                edge_pid, cloud_pid = demo.processes["edge"].pid, demo.processes["cloud"].pid
                edge: list[tuple[float, float]] = []
                cloud: list[tuple[float, float]] = []
                sent = 0
                client = MqttClient(f"mqtt://127.0.0.1:{demo.ports.mqtt}", "soak-bench")
                topic = twin.device_topic(f"default/{DEVICE}", "twin/update")
                began = time.perf_counter()
                async with trio.open_nursery() as load:
                    await load.start(client.run)

                    async def sample() -> None:
                        while True:
                            now = time.perf_counter() - began
                            edge.append((now, rss_mb(edge_pid)))
                            cloud.append((now, rss_mb(cloud_pid)))
                            await trio.sleep(1)

                    load.start_soon(sample)
                    interval = 1 / rate
                    deadline = trio.current_time()
                    while time.perf_counter() - began < seconds:
                        await client.publish(
                            topic, twin.twin_update({"temperature": (f"{sent % 1000 / 10:g}", "float")})
                        )
                        sent += 1
                        deadline += interval
                        await trio.sleep_until(deadline)
                    load.cancel_scope.cancel()
                final = f"{(sent - 1) % 1000 / 10:g}"
                stopped = time.perf_counter()

                def reported() -> str | None:
                    seen = clients.custom.get_namespaced_custom_object(
                        DEVICE_GROUP, DEVICE_VERSION, "default", DEVICE_PLURAL, DEVICE
                    )
                    twins = (seen.get("status") or {}).get("twins") or []
                    return next(
                        ((t.get("reported") or {}).get("value") for t in twins if t["propertyName"] == "temperature"),
                        None,
                    )

                with trio.move_on_after(60):  # the last update's way to the API: how far behind the load left it
                    while await trio.to_thread.run_sync(reported) != final:  # noqa: ASYNC110 (an API to poll)
                        await trio.sleep(0.05)
                settled = await trio.to_thread.run_sync(reported) == final
                settle_s = time.perf_counter() - stopped
                warm = [s for s in edge if s[0] >= seconds / 4]
                warm_cloud = [s for s in cloud if s[0] >= seconds / 4]
                return {
                    "edge_rss_start_mb": round(warm[0][1], 1),
                    "edge_rss_end_mb": round(edge[-1][1], 1),
                    "edge_growth_mb_per_hour": round(slope_per_hour(warm), 1),
                    "cloud_rss_start_mb": round(warm_cloud[0][1], 1),
                    "cloud_rss_end_mb": round(cloud[-1][1], 1),
                    "cloud_growth_mb_per_hour": round(slope_per_hour(warm_cloud), 1),
                    # eight points across the run, to see a plateau (or its absence) at a glance
                    "cloud_rss_series_mb": [round(m, 1) for _, m in cloud[:: max(1, len(cloud) // 8)]],
                    "edge_rss_series_mb": [round(m, 1) for _, m in edge[:: max(1, len(edge) // 8)]],
                    "updates_sent": sent,
                    "last_value_reported": settled,
                    "last_value_after_s": round(settle_s, 2),
                    "seconds": seconds,
                    "rate": rate,
                }
            finally:
                with trio.CancelScope(shield=True):
                    await demo.stop()
                nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--rate", type=int, default=200, help="twin updates per second")
    options = parser.parse_args()
    print(json.dumps(trio.run(main, options.seconds, options.rate)))

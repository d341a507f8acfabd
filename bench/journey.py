"""The device journey, timed: register change -> Device.status (seen through the API's watch), and
desired patch -> the register holding it, over real cloud and edge processes as `kubeedge demo` runs them.

Also the path KubeEdge's own figure measures, with no polling in it: a twin update published over MQTT to
the edge's broker (as a mapper publishes it) -> ``Device.status`` through the API's watch
(``mqtt_reported_p50_ms`` / ``mqtt_reported_p99_ms``), for a second Device no mapper can reach.

Prints one JSON object: reported_p50_ms, reported_p99_ms, desired_p50_ms, desired_p99_ms,
mqtt_reported_p50_ms, mqtt_reported_p99_ms, edge_rss_mb, cloud_rss_mb (peak RSS of each process during the
run), plus changes and collect_cycle_ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

from kubeedge.mappers.sdk import twin
from kubeedge.mappers.sdk.mqtt import MqttClient
from kubeedge.plugins.demo import manifests
from kubeedge.plugins.demo.run import DEVICE_GROUP, DEVICE_PLURAL, DEVICE_VERSION, Demo, api, join_edge, start_cloud
from kubeedge.plugins.demo.simulator import Thermostat

MQTT_DEVICE = "thermostat-mqtt"


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 1)


def watch_reported(
    demo: Demo,
    send: trio.MemorySendChannel[tuple[str, str, float]],
    token: trio.lowlevel.TrioToken,
    stop: list[bool],
) -> None:
    """In a worker thread: follow the Devices through the API's watch; hand (device, temperature, time) to trio."""
    from kubernetes import watch
    from urllib3.exceptions import ProtocolError

    clients = api(demo)
    while not stop[0]:
        stream = watch.Watch().stream(
            clients.custom.list_namespaced_custom_object,
            DEVICE_GROUP,
            DEVICE_VERSION,
            "default",
            DEVICE_PLURAL,
            timeout_seconds=5,
        )
        try:
            for event in stream:
                seen = time.perf_counter()
                for twin in (event["object"].get("status") or {}).get("twins") or []:
                    value = (twin.get("reported") or {}).get("value")
                    if twin.get("propertyName") == "temperature" and value is not None:
                        name = event["object"]["metadata"]["name"]
                        trio.from_thread.run_sync(send.send_nowait, (name, value, seen), trio_token=token)
                if stop[0]:
                    return
        except ProtocolError:
            continue  # a watch cut short is simply watched again, as every client does


async def main(changes: int, cycle_ms: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kubeedge-journey-") as root:
        demo = Demo(root=Path(root), node="edge-bench", out=sys.stderr)  # stdout carries only the JSON
        async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
            thermostat = Thermostat(seed=1)
            demo.modbus_port = await nursery.start(partial(thermostat.run, interval=3600))
            try:
                await start_cloud(demo)
                await join_edge(demo)
                clients = api(demo)
                await trio.to_thread.run_sync(
                    lambda: clients.custom.create_namespaced_custom_object(
                        DEVICE_GROUP, DEVICE_VERSION, "default", "devicemodels", manifests.device_model()
                    )
                )
                body = manifests.device(demo.node, demo.modbus_port, cycle_ns=cycle_ms * 1_000_000)
                await trio.to_thread.run_sync(
                    lambda: clients.custom.create_namespaced_custom_object(
                        DEVICE_GROUP, DEVICE_VERSION, "default", DEVICE_PLURAL, body
                    )
                )
                # the second Device's protocol points at a port nothing serves: only MQTT moves its twins
                unreachable = manifests.device(demo.node, 1, cycle_ns=3600 * 1_000_000_000)
                unreachable["metadata"]["name"] = MQTT_DEVICE
                unreachable["metadata"]["labels"] = {}
                await trio.to_thread.run_sync(
                    lambda: clients.custom.create_namespaced_custom_object(
                        DEVICE_GROUP, DEVICE_VERSION, "default", DEVICE_PLURAL, unreachable
                    )
                )
                send, receive = trio.open_memory_channel[tuple[str, str, float]](10_000)
                stop = [False]
                nursery.start_soon(
                    partial(
                        trio.to_thread.run_sync,
                        watch_reported,
                        demo,
                        send,
                        trio.lowlevel.current_trio_token(),
                        stop,
                        abandon_on_cancel=True,
                    )
                )

                async def reported(value: str, device: str = manifests.DEVICE) -> float:
                    async for seen_device, seen_value, seen_at in receive:
                        if seen_device == device and seen_value == value:
                            return seen_at
                    raise RuntimeError("watch ended")

                reported_ms: list[float] = []
                with trio.fail_after(60):
                    await thermostat.set_temperature(10.0)
                    await reported("10")
                for i in range(changes):
                    celsius = 11.0 + (i % 100) / 10 + (i // 100) * 10  # every value distinct
                    began = time.perf_counter()
                    await thermostat.set_temperature(celsius)
                    with trio.fail_after(30):
                        seen_at = await reported(f"{celsius:g}")
                    reported_ms.append((seen_at - began) * 1000)

                desired_ms: list[float] = []
                for i in range(changes):
                    setpoint = 5.0 + (i % 300) / 10
                    patch = [{"op": "replace", "path": "/spec/properties/2/desired/value", "value": f"{setpoint:g}"}]
                    began = time.perf_counter()
                    await trio.to_thread.run_sync(
                        partial(
                            clients.custom.patch_namespaced_custom_object,
                            DEVICE_GROUP,
                            DEVICE_VERSION,
                            "default",
                            DEVICE_PLURAL,
                            manifests.DEVICE,
                            patch,
                            _content_type="application/json-patch+json",
                        )
                    )
                    with trio.fail_after(30):
                        # The register lives in pymodbus's server, which has no change callback: sample it.
                        while await thermostat.setpoint() != setpoint:  # noqa: ASYNC110
                            await trio.sleep(0.002)
                    desired_ms.append((time.perf_counter() - began) * 1000)
                mqtt_ms: list[float] = []
                client = MqttClient(f"mqtt://127.0.0.1:{demo.ports.mqtt}", "journey-bench")
                topic = twin.device_topic(f"default/{MQTT_DEVICE}", "twin/update")
                async with trio.open_nursery() as mqtt:
                    await mqtt.start(client.run)
                    for i in range(changes):
                        value = f"{20 + i / 10:g}"
                        began = time.perf_counter()
                        await client.publish(topic, twin.twin_update({"temperature": (value, "float")}))
                        with trio.fail_after(30):
                            seen_at = await reported(value, MQTT_DEVICE)
                        mqtt_ms.append((seen_at - began) * 1000)
                    mqtt.cancel_scope.cancel()

                stop[0] = True
                result = {
                    "reported_p50_ms": round(statistics.median(reported_ms), 1),
                    "reported_p99_ms": percentile(reported_ms, 0.99),
                    "desired_p50_ms": round(statistics.median(desired_ms), 1),
                    "desired_p99_ms": percentile(desired_ms, 0.99),
                    "mqtt_reported_p50_ms": round(statistics.median(mqtt_ms), 1),
                    "mqtt_reported_p99_ms": percentile(mqtt_ms, 0.99),
                    "edge_rss_mb": peak_rss_mb(demo.processes["edge"].pid),
                    "cloud_rss_mb": peak_rss_mb(demo.processes["cloud"].pid),
                    "changes": changes,
                    "collect_cycle_ms": cycle_ms,
                }
            finally:
                with trio.CancelScope(shield=True):
                    await demo.stop()
                nursery.cancel_scope.cancel()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--collect-cycle-ms", type=int, default=100, help="the Device's collect/report cycle")
    options = parser.parse_args()
    print(json.dumps(trio.run(main, options.changes, options.collect_cycle_ms)))

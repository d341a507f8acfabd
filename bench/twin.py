"""Benchmark of the device-twin path: MQTT twin update from a mapper -> twin module -> store -> update/result
back to the mapper, and the reported value on its way to the cloud.

An edge node runs in this process (eventbus mqttMode 0 with the embedded broker, twin, and a stand-in for
edgehub that takes what goes to the cloud). The mapper is a separate process (paho-mqtt, as third-party
mappers are) that keeps ``--window`` updates in flight over ``--devices`` devices and times each update
until its ``update/result`` arrives (the result is published after the store's transaction commits).

    .venv/bin/python bench/twin.py [--updates 20000] [--devices 100] [--window 64] [--rate 500]

Two runs: a saturated one (``--window`` updates in flight) gives ``updates_per_s``; a paced one (``--rate``
updates/s) gives the latency ``p99_ms`` (and p50). Prints one JSON object with those, the saturated run's
latencies, the number of cloud messages and whether the newest value won for every device.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import trio

from kubeedge import BaseModule, Context, Kernel, Message, Plugins
from kubeedge.profile import build_profile

MAPPER = r"""
import json, sys, threading, time
import paho.mqtt.client as mqtt

port, total, window, devices, rate = map(int, sys.argv[1:6])
sent, latencies = {}, []
room = threading.Semaphore(window)
finished, subscribed = threading.Event(), threading.Event()
lock = threading.Lock()

def on_message(client, userdata, message):
    event_id = json.loads(message.payload).get("event_id")
    with lock:
        began = sent.pop(event_id, None)
    if began is None:
        return
    latencies.append(time.perf_counter() - began)
    room.release()
    if len(latencies) >= total:
        finished.set()

client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
client.on_message = on_message
client.on_subscribe = lambda *a: subscribed.set()
client.max_queued_messages_set(0)
client.connect("127.0.0.1", port)
client.loop_start()
client.subscribe("$hw/events/device/+/+/twin/update/result", qos=0)
subscribed.wait(10)
begin = time.perf_counter()
for i in range(total):
    if rate:
        delay = begin + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    room.acquire()
    event_id = f"e{i}"
    payload = json.dumps({"event_id": event_id, "timestamp": int(time.time() * 1000),
                          "twin": {"temperature": {"actual": {"value": str(i)}, "metadata": {"type": "int"}}}})
    with lock:
        sent[event_id] = time.perf_counter()
    client.publish(f"$hw/events/device/default/dev{i % devices}/twin/update", payload, qos=0)
finished.wait(300)
elapsed = time.perf_counter() - begin
client.disconnect(); client.loop_stop()
latencies.sort()
pick = lambda f: latencies[min(len(latencies) - 1, int(f * (len(latencies) - 1)))] * 1000 if latencies else None
print(json.dumps({"done": len(latencies), "elapsed": elapsed, "p50_ms": pick(0.5), "p99_ms": pick(0.99)}))
"""


class Cloud(BaseModule):
    """Takes what the edge sends upstream, as edgehub would, and keeps the newest reported value per device."""

    name = "websocket"
    group = "hub"

    def __init__(self) -> None:
        super().__init__({})
        self.reports = 0
        self.reported: dict[str, tuple[int, str]] = {}
        self.changed = trio.Event()

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for message in ctx.bus.channel(self.name):
            if message.resource.endswith("/twin/edge_updated"):
                self.reports += 1
                actual = message.content["twin"]["temperature"]["actual"]
                device = message.resource.split("/")[2]
                self.reported[device] = (actual["metadata"]["timestamp"], actual["value"])
                self.changed.set()
                self.changed = trio.Event()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from kubeedge.plugins.eventbus.module import EventBus
    from kubeedge.plugins.twin.module import DeviceTwin

    with tempfile.TemporaryDirectory(prefix="bench-twin-") as tmp:
        profile = build_profile({"role": "edge", "node": {"name": "bench"}, "modules": {}}, data_dir=Path(tmp))
        eventbus = EventBus({"mqttMode": 0, "mqttServerInternal": "tcp://127.0.0.1:0"})
        twin, cloud = DeviceTwin({}), Cloud()
        kernel = Kernel(profile, Plugins(), [eventbus, twin, cloud])
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(kernel.run, handle_signals=False))
            devices = [{"id": f"default/dev{i}", "name": f"dev{i}"} for i in range(args.devices)]
            await kernel.ctx.send(
                "twin",
                Message(
                    source="devicecontroller",
                    group="twin",
                    operation="update",
                    resource="membership",
                    content={"added_devices": devices, "removed_devices": []},
                ),
            )
            await kernel.ctx.send(
                "twin",
                Message(group="meta", operation="connect", resource="node/connection", content="cloud_connected"),
            )
            mapper = await run_mapper(eventbus.internal_port, args.updates, args.window, args.devices, 0)
            paced = await run_mapper(eventbus.internal_port, args.paced_updates, 10000, args.devices, args.rate)
            # The last value sent to each device (i % devices) is the one the cloud must hold.
            last = {
                f"dev{d}": str(max(i for i in range(args.paced_updates) if i % args.devices == d))
                for d in range(args.devices)
            }
            with trio.fail_after(10):
                while {d: v for d, (_, v) in cloud.reported.items()} != last:
                    await cloud.changed.wait()
            kernel.stop()
    return {
        "updates_per_s": round(mapper["done"] / mapper["elapsed"]),
        "p99_ms": round(paced["p99_ms"], 2),
        "p50_ms": round(paced["p50_ms"], 2),
        "paced_rate_per_s": args.rate,
        "saturated_p50_ms": round(mapper["p50_ms"], 2),
        "saturated_p99_ms": round(mapper["p99_ms"], 2),
        "updates": mapper["done"] + paced["done"],
        "devices": args.devices,
        "window": args.window,
        "cloud_messages": cloud.reports,
        "newest_value_won": True,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


async def run_mapper(port: int | None, updates: int, window: int, devices: int, rate: int) -> dict[str, Any]:
    command = [sys.executable, "-c", MAPPER, str(port), str(updates), str(window), str(devices), str(rate)]
    result = await trio.run_process(command, capture_stdout=True)
    return dict(json.loads(result.stdout))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=20000)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--window", type=int, default=64, help="updates in flight in the saturated run")
    parser.add_argument("--rate", type=int, default=500, help="updates/s of the paced run (latency)")
    parser.add_argument("--paced-updates", type=int, default=5000)
    print(json.dumps(trio.run(main, parser.parse_args())))

"""Bus throughput and send_sync latency, beside a raw trio memory channel in the same run.

Prints one JSON object: bus_msgs_per_s, raw_msgs_per_s, ratio, send_sync_p50_us, send_sync_p99_us.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import trio

from kubeedge import Bus, Message


async def raw_rate(messages: list[Message]) -> float:
    send, receive = trio.open_memory_channel[Message](1024)

    async def consume() -> None:
        for _ in range(len(messages)):
            await receive.receive()

    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        for message in messages:
            await send.send(message)
    return len(messages) / (time.perf_counter() - began)


async def bus_rate(messages: list[Message]) -> float:
    bus = Bus()
    bus.add_module("consumer", "bench")

    async def consume() -> None:
        for _ in range(len(messages)):
            await bus.receive("consumer")

    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        for message in messages:
            await bus.send("consumer", message)
    return len(messages) / (time.perf_counter() - began)


async def sync_latencies(count: int) -> list[float]:
    bus = Bus()
    bus.add_module("echo", "bench")

    async def echo() -> None:
        async for request in bus.channel("echo"):
            bus.send_resp(request.reply(request.content, source="echo"))

    samples: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo)
        for i in range(count):
            request = Message(source="bench", group="bench", operation="query", resource="r", content=i)
            began = time.perf_counter()
            await bus.send_sync("echo", request, timeout=5)
            samples.append((time.perf_counter() - began) * 1e6)
        nursery.cancel_scope.cancel()
    return samples


async def main(count: int, rounds: int) -> dict[str, float]:
    messages = [
        Message(source="p", group="g", operation="update", resource=f"default/pod/p{i}", content={"i": i})
        for i in range(count)
    ]
    raw = []
    on_bus = []
    for _ in range(rounds):  # interleaved, so both see the same machine state
        raw.append(await raw_rate(messages))
        on_bus.append(await bus_rate(messages))
    latencies = sorted(await sync_latencies(min(count, 20000)))
    bus_best, raw_best = max(on_bus), max(raw)
    return {
        "bus_msgs_per_s": round(bus_best),
        "raw_msgs_per_s": round(raw_best),
        "ratio": round(bus_best / raw_best, 3),
        "send_sync_p50_us": round(statistics.median(latencies), 1),
        "send_sync_p99_us": round(latencies[int(len(latencies) * 0.99) - 1], 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    print(json.dumps(trio.run(main, options.messages, options.rounds)))

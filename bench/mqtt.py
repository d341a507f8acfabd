"""Benchmark of the embedded MQTT broker against mosquitto, in the same run on the same machine.

One publisher to one subscriber, 64-byte messages, QoS 0 and QoS 1. The load comes from mosquitto's C
clients (``mosquitto_pub -l`` fed from a file, ``mosquitto_sub -C N``) in their own processes, so the
figures are the brokers', not a Python client's. The embedded broker is the eventbus's (amqtt on its own
asyncio loop in a thread of this trio process, with its flood bounds); mosquitto is /usr/sbin/mosquitto.

Then a 10 s flood: a C publisher sends as fast as it can to a topic with one subscriber that never reads;
the peak RSS of this process (which hosts the broker) is sampled every 50 ms. Without the bounds amqtt
queues every message (150-190k in 5 s in the lab) and grows without limit.

    .venv/bin/python bench/mqtt.py [--messages 30000] [--mosquitto-messages 200000] [--flood 10]

Prints one JSON object: ``embedded_msgs_per_s``, ``mosquitto_msgs_per_s``, ``ratio`` (QoS 0),
``flood_peak_rss_mb``, and the QoS 1 figures and details.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import trio

from kubeedge.plugins.eventbus.broker import BrokerSettings, EmbeddedBroker

PAYLOAD = "x" * 64
TOPIC = "bench/topic"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def subscribed(process: trio.Process) -> None:
    """Wait for mosquitto_sub -d to report its SUBACK (then it is ready to count)."""
    assert process.stdout is not None
    seen = b""
    with trio.fail_after(10):
        while b"SUBACK" not in seen:
            chunk = await process.stdout.receive_some(4096)
            if not chunk:
                raise RuntimeError("mosquitto_sub ended before subscribing")
            seen += chunk


async def one_run(port: int, qos: int, count: int, lines: Path) -> float:
    """Messages per second from one mosquitto_pub to one mosquitto_sub through the broker on ``port``."""
    # stdbuf: mosquitto_sub writes through stdio, which holds output back on a pipe.
    sub_cmd = ["stdbuf", "-oL", "mosquitto_sub", "-d", "-h", "127.0.0.1", "-p", str(port), "-t", TOPIC, "-q", str(qos)]
    sub_cmd += ["-C", str(count), "--nodelay"]
    async with trio.open_nursery() as nursery:
        sub = await trio.lowlevel.open_process(sub_cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        await subscribed(sub)
        done = trio.Event()

        async def drain() -> None:
            assert sub.stdout is not None
            while await sub.stdout.receive_some(1 << 16):
                pass
            done.set()

        nursery.start_soon(drain)
        began = time.perf_counter()
        with lines.open("rb") as source:
            pub = await trio.lowlevel.open_process(
                ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", TOPIC, "-q", str(qos), "-l", "--nodelay"],
                stdin=source,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        with trio.move_on_after(120) as scope:
            await sub.wait()
        elapsed = time.perf_counter() - began
        if scope.cancelled_caught:
            sub.kill()
        await pub.wait()
        await done.wait()
    return count / elapsed


async def flood(port: int, seconds: float) -> dict[str, Any]:
    """A stalled subscriber and a flooding publisher; peak RSS of this process."""
    me = psutil.Process(os.getpid())
    baseline = me.memory_info().rss
    stalled = socket.create_connection(("127.0.0.1", port))
    # CONNECT (clean session, client id "stalled") and SUBSCRIBE to the topic at QoS 0; then never read.
    client_id = b"stalled"
    variable = b"\x00\x04MQTT\x04\x02\x00\x3c"
    payload = len(client_id).to_bytes(2, "big") + client_id
    stalled.sendall(bytes([0x10, len(variable) + len(payload)]) + variable + payload)
    topic = TOPIC.encode()
    body = b"\x00\x01" + len(topic).to_bytes(2, "big") + topic + b"\x00"
    stalled.sendall(bytes([0x82, len(body)]) + body)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peak = baseline
    # The C publisher reads lines as fast as `yes` writes them; one process group, ended by its id.
    flooder = await trio.lowlevel.open_process(
        ["sh", "-c", f"yes {PAYLOAD} | mosquitto_pub -h 127.0.0.1 -p {port} -t {TOPIC} -q 0 -l"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        end = trio.current_time() + seconds
        while trio.current_time() < end:
            peak = max(peak, me.memory_info().rss)
            await trio.sleep(0.05)
    finally:
        os.killpg(flooder.pid, signal.SIGKILL)
        await flooder.wait()
        stalled.close()
    return {"flood_peak_rss_mb": round(peak / 2**20, 1), "flood_baseline_rss_mb": round(baseline / 2**20, 1)}


async def mosquitto_rates(tmp: Path, args: argparse.Namespace, lines: Path, lines_qos1: Path) -> dict[str, float]:
    port = free_port()
    config = tmp / "mosquitto.conf"
    user = "user root\n" if os.geteuid() == 0 else ""
    # mosquitto drops QoS 1 messages beyond 1,000 queued for a client by default; the embedded broker never
    # drops them, so the comparison lifts that limit.
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n{user}"
    )
    process = await trio.lowlevel.open_process(
        ["/usr/sbin/mosquitto", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with trio.fail_after(10):
            while True:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                    await stream.aclose()
                    break
                except OSError:
                    await trio.sleep(0.02)  # waiting for a foreign process to listen
        qos0 = await one_run(port, 0, args.mosquitto_messages, lines)
        qos1 = await one_run(port, 1, args.mosquitto_messages // 4, lines_qos1)
    finally:
        process.terminate()
        await process.wait()
    return {"qos0": qos0, "qos1": qos1}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("mosquitto_pub") is None:
        raise SystemExit("needs mosquitto-clients (apt-get install mosquitto mosquitto-clients)")
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as name:
        tmp = Path(name)
        big = max(args.messages, args.mosquitto_messages)
        lines = tmp / "lines"
        lines.write_text(f"{PAYLOAD}\n" * big)
        lines_qos1 = tmp / "lines1"
        lines_qos1.write_text(f"{PAYLOAD}\n" * max(args.messages // 3, args.mosquitto_messages // 4))
        embedded: dict[str, Any] = {}
        async with trio.open_nursery() as nursery:
            broker = EmbeddedBroker(BrokerSettings(host="127.0.0.1", port=0), tap=False)
            port = await nursery.start(broker.run)
            embedded["qos0"] = await one_run(port, 0, args.messages, lines)
            embedded["qos1"] = await one_run(port, 1, args.messages // 3, lines_qos1)
            before = broker.received
            embedded.update(await flood(port, args.flood))
            embedded["flood_dropped_qos0"] = broker.dropped
            embedded["flood_messages_in"] = broker.received - before
            nursery.cancel_scope.cancel()
        mosquitto = await mosquitto_rates(tmp, args, lines, lines_qos1)
    return {
        "embedded_msgs_per_s": round(embedded["qos0"]),
        "mosquitto_msgs_per_s": round(mosquitto["qos0"]),
        "ratio": round(embedded["qos0"] / mosquitto["qos0"], 3),
        "flood_peak_rss_mb": embedded["flood_peak_rss_mb"],
        "flood_baseline_rss_mb": embedded["flood_baseline_rss_mb"],
        "flood_seconds": args.flood,
        "flood_messages_in": embedded["flood_messages_in"],
        "flood_dropped_qos0": embedded["flood_dropped_qos0"],
        "embedded_qos1_msgs_per_s": round(embedded["qos1"]),
        "mosquitto_qos1_msgs_per_s": round(mosquitto["qos1"]),
        "qos1_ratio": round(embedded["qos1"] / mosquitto["qos1"], 3),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=30000, help="messages per embedded-broker run")
    parser.add_argument("--mosquitto-messages", type=int, default=200000, help="messages per mosquitto run")
    parser.add_argument("--flood", type=float, default=10.0, help="seconds of flood")
    print(json.dumps(trio.run(main, parser.parse_args())))

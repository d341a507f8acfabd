"""Fixtures for the mapper tests: a real mosquitto (once per session), a trio-asyncio loop, the MQTT edge,
a pymodbus TCP simulator."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_asyncio

sys.path.insert(0, str(Path(__file__).parent))  # the test kit (mapperkit.py) next to this file

from mapperkit import MOSQUITTO, Edge, ModbusSim, free_port, start_tcp_sim, wait_port

from kubeedge.mappers.sdk.mqtt import MqttClient


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real mosquitto on a free loopback port for the whole session; yields ``mqtt://127.0.0.1:<port>``."""
    port = free_port()
    conf = tmp_path_factory.mktemp("mosquitto") / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc, time.monotonic() + 10)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.fixture
async def aio_loop() -> AsyncIterator[Any]:
    async with trio_asyncio.open_loop() as loop:
        yield loop


@pytest.fixture
async def edge(mosquitto: str, nursery: trio.Nursery) -> AsyncIterator[Edge]:
    client = MqttClient(mosquitto, f"test-edge-{free_port()}")
    await client.subscribe("$hw/events/#")
    await client.subscribe("$ke/events/#")
    await client.subscribe("custom/#")
    await nursery.start(client.run)
    edge = Edge(client)
    nursery.start_soon(edge.collect)
    yield edge


@pytest.fixture
async def modbus_tcp(aio_loop: Any) -> AsyncIterator[ModbusSim]:
    sim = await start_tcp_sim()
    yield sim
    await sim.stop()

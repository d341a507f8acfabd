"""Mapper test kit: free ports, the MQTT 'edge' that records what mappers say, pymodbus simulators, devices."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from trio_asyncio import aio_as_trio

from kubeedge.mappers.sdk.mqtt import MqttClient

MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("mosquitto did not start listening")


class Edge:
    """Plays the edge's side of MQTT: records device topics, publishes deltas and membership replies."""

    def __init__(self, client: MqttClient) -> None:
        self.client = client
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._changed = trio.Event()

    async def collect(self) -> None:
        async for topic, payload in self.client.messages:
            try:
                data = json.loads(payload)
            except ValueError:
                data = {"raw": payload.decode(errors="replace")}
            self.messages.append((topic, data))
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(
        self,
        topic: str,
        predicate: Callable[[dict[str, Any]], bool] = lambda _: True,
        *,
        timeout: float = 10,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """The first message on ``topic`` (recorded so far or arriving) for which ``predicate`` holds."""
        seen = 0
        with trio.fail_after(timeout):
            while True:
                for index in range(seen, len(self.messages)):
                    t, data = self.messages[index]
                    if t == topic and predicate(data):
                        return data
                seen = len(self.messages)
                await self._changed.wait()

    def clear(self) -> None:
        self.messages.clear()

    async def publish(self, topic: str, payload: Any) -> None:
        await self.client.publish(topic, json.dumps(payload) if not isinstance(payload, (str, bytes)) else payload)


def actual(device_id: str, prop: str, value: str) -> tuple[str, Callable[[dict[str, Any]], bool]]:
    """(topic, predicate) matching a twin/update reporting ``prop`` == ``value``."""
    return (
        f"$hw/events/device/{device_id}/twin/update",
        lambda data: ((data.get("twin") or {}).get(prop) or {}).get("actual", {}).get("value") == value,
    )


def state_is(state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda data: data.get("state") == state


# -- pymodbus simulator ---------------------------------------------------------------------------------


class ModbusSim:
    """A pymodbus simulator device (id 1, 100 of each table) served over TCP or RTU."""

    def __init__(self, server: Any, port: int | str, requests: list[str]) -> None:
        self.server = server
        self.port = port
        self.requests = requests

    async def set(self, function_code: int, address: int, values: list[Any], device_id: int = 1) -> None:
        await aio_as_trio(self.server.async_setValues)(device_id, function_code, address, values)

    async def get(self, function_code: int, address: int, count: int = 1, device_id: int = 1) -> list[Any]:
        return list(await aio_as_trio(self.server.async_getValues)(device_id, function_code, address, count))

    async def stop(self) -> None:
        await aio_as_trio(self.server.shutdown)()


def sim_device(device_id: int = 1, size: int = 100) -> Any:
    from pymodbus.simulator import DataType, SimData, SimDevice

    return SimDevice(
        id=device_id,
        simdata=(
            [SimData(0, count=size, values=False, datatype=DataType.BITS)],
            [SimData(0, count=size, values=False, datatype=DataType.BITS)],
            [SimData(0, count=size, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=size, values=0, datatype=DataType.REGISTERS)],
        ),
    )


async def start_tcp_sim(port: int = 0, devices: Any = None) -> ModbusSim:
    from pymodbus.server import ModbusTcpServer

    requests: list[str] = []

    def trace(sending: bool, pdu: Any) -> Any:
        if not sending:
            requests.append(type(pdu).__name__)
        return pdu

    async def start() -> Any:
        server = ModbusTcpServer(devices or sim_device(), address=("127.0.0.1", port), trace_pdu=trace)
        await server.serve_forever(background=True)
        return server

    server = await aio_as_trio(start)()
    bound = server.transport.sockets[0].getsockname()[1]
    return ModbusSim(server, bound, requests)


def write_yaml(path: Path, *docs: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
    return path


# -- Device and DeviceModel objects (v1beta1) -------------------------------------------------------
MS = 1_000_000  # nanoseconds


def model(name: str, properties: list[dict[str, Any]], protocol: str = "modbus") -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"protocol": protocol, "properties": properties},
    }


def device(
    name: str,
    model_name: str,
    protocol_config: dict[str, Any],
    visitors: dict[str, dict[str, Any]],
    *,
    protocol: str = "modbus",
    cycle_ms: int = 100,
    extra: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    properties = []
    for prop, config in visitors.items():
        entry: dict[str, Any] = {
            "name": prop,
            "collectCycle": cycle_ms * MS,
            "reportCycle": cycle_ms * MS,
            "visitors": {"protocolName": protocol, "configData": config},
        }
        entry.update((extra or {}).get(prop, {}))
        properties.append(entry)
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "deviceModelRef": {"name": model_name},
            "nodeName": "edge-1",
            "protocol": {"protocolName": protocol, "configData": protocol_config},
            "properties": properties,
        },
    }

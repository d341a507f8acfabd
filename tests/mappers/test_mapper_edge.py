"""The device journey on one edge kernel: the real eventbus (embedded broker), twin and mappers modules,
a stub in edgehub's place. Cloud membership -> twin -> mappers -> Modbus register -> MQTT twin/update ->
twin -> edge_updated to the cloud; cloud desired -> twin delta -> register written -> reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from mapperkit import ModbusSim, device, free_port, model

from kubeedge import BaseModule, Context, Kernel, Message
from kubeedge.kernel import resolve
from kubeedge.profile import build_profile

DEVICE_ID = "default/boiler"


class CloudStub(BaseModule):
    """Stands where edgehub (``websocket``) stands; records what the edge sends to the cloud."""

    name = "websocket"
    group = "hub"

    def __init__(self) -> None:
        super().__init__({})
        self.received: list[Message] = []
        self._changed = trio.Event()

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for message in ctx.bus.channel(self.name):
            self.received.append(message)
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for_actual(self, resource: str, prop: str, value: str) -> None:
        def found() -> bool:
            for message in self.received:
                content = message.content if isinstance(message.content, dict) else {}
                actual = ((content.get("twin") or {}).get(prop) or {}).get("actual") or {}
                if message.resource == resource and actual.get("value") == value:
                    return True
            return False

        with trio.fail_after(15):
            while not found():
                await self._changed.wait()


async def test_cloud_membership_and_desired_values_reach_a_modbus_register_through_the_edge(
    modbus_tcp: ModbusSim, tmp_path: Path
) -> None:
    await modbus_tcp.set(4, 0, [615])
    await modbus_tcp.set(3, 10, [40])
    broker = f"tcp://127.0.0.1:{free_port()}"
    profile = build_profile(
        {
            "role": "edge",
            "node": {"name": "edge-1"},
            "modules": {
                "eventbus": {"mqttMode": 0, "mqttServerInternal": broker},
                "twin": {},
                "mappers": {"broker": broker},
            },
            "mappers": {"modbus": {}},
        },
        data_dir=tmp_path,
    )
    plugins, modules = resolve(profile)
    cloud = CloudStub()
    kernel = Kernel(profile, plugins, [cloud, *modules])
    boiler_model = model(
        "boiler-model",
        [
            {"name": "temperature", "type": "FLOAT", "accessMode": "ReadOnly"},
            {"name": "setpoint", "type": "INT", "accessMode": "ReadWrite", "minimum": "0", "maximum": "90"},
        ],
    )
    visitors = {
        "temperature": {"register": "InputRegister", "offset": 0, "scale": 0.1},
        "setpoint": {"register": "HoldingRegister", "offset": 10},
    }
    boiler = device("boiler", "boiler-model", {"ip": "127.0.0.1", "port": modbus_tcp.port}, visitors, cycle_ms=100)
    entry = {
        "id": DEVICE_ID,
        "name": "boiler",
        "state": "unknown",
        "twin": {
            "temperature": {"metadata": {"type": "float"}},
            "setpoint": {"metadata": {"type": "int"}},
        },
        "device": boiler,
        "model": boiler_model,
    }
    async with trio.open_nursery() as nursery:
        await nursery.start(kernel.run)
        for name in ("twin", "mappers"):
            await kernel.bus.send(
                name,
                Message(
                    source="websocket",
                    group="meta",
                    operation="connect",
                    resource="node/connection",
                    content="cloud_connected",
                ),
            )
        await kernel.bus.send(
            "twin",
            Message(
                source="devicecontroller",
                group="twin",
                operation="update",
                resource="membership",
                content={"event_id": "m1", "timestamp": 1, "added_devices": [entry], "removed_devices": []},
            ),
        )
        edge_updated = f"device/{DEVICE_ID}/twin/edge_updated"
        await cloud.wait_for_actual(edge_updated, "temperature", "61.5")
        await cloud.wait_for_actual(edge_updated, "setpoint", "40")

        await kernel.bus.send(
            "twin",
            Message(
                source="devicecontroller",
                group="twin",
                operation="update",
                resource=f"device/{DEVICE_ID}/twin/cloud_updated",
                content={"event_id": "c1", "timestamp": 2, "twin": {"setpoint": {"expected": {"value": "66"}}}},
            ),
        )
        await cloud.wait_for_actual(edge_updated, "setpoint", "66")
        assert await modbus_tcp.get(3, 10) == [66]
        kernel.stop()

"""The `kvline` driver against its simulator, through the SDK's runtime (no broker needed)."""

from __future__ import annotations

from typing import Any

import trio
from kubeedge_mapper_kvline import kubeedge_mapper_driver
from kubeedge_mapper_kvline.simulator import Simulator

from kubeedge.mappers.sdk import parse_device
from kubeedge.mappers.sdk.runtime import Mapper

MODEL = {
    "apiVersion": "devices.kubeedge.io/v1beta1",
    "kind": "DeviceModel",
    "metadata": {"name": "kvline-model", "namespace": "default"},
    "spec": {
        "protocol": "kvline",
        "properties": [
            {"name": "temperature", "type": "FLOAT", "accessMode": "ReadOnly"},
            {"name": "setpoint", "type": "INT", "accessMode": "ReadWrite", "minimum": "0", "maximum": "30"},
        ],
    },
}


def device(port: int) -> dict[str, Any]:
    def prop(name: str, config: dict[str, Any]) -> dict[str, Any]:
        visitors = {"protocolName": "kvline", "configData": config}
        return {"name": name, "collectCycle": 100_000_000, "reportCycle": 100_000_000, "visitors": visitors}

    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": "sensor", "namespace": "default"},
        "spec": {
            "deviceModelRef": {"name": "kvline-model"},
            "protocol": {"protocolName": "kvline", "configData": {"host": "127.0.0.1", "port": port}},
            "properties": [prop("temperature", {"key": "temp", "scale": 0.1}), prop("setpoint", {"key": "sp"})],
        },
    }


async def test_reads_and_writes_the_simulator() -> None:
    simulator = Simulator({"temp": "215", "sp": "20"})
    async with trio.open_nursery() as nursery:
        port = await nursery.start(simulator.serve)
        mapper = Mapper([kubeedge_mapper_driver()], broker=None, devices=[parse_device(device(port), MODEL)])
        await nursery.start(mapper.run)
        worker = await mapper.wait_device("default/sensor")
        with trio.fail_after(5):
            await worker.wait_for(lambda w: len(w.values) == 2)
        assert worker.values["temperature"] == ("21.5", "float") and worker.state == "online"
        assert worker.desire({"setpoint": "99"}) == [("setpoint", "property setpoint: 99 is above the maximum 30")]
        assert worker.desire({"setpoint": "25"}) == []
        with trio.fail_after(5):
            await worker.wait_for(lambda w: w.values["setpoint"][0] == "25")
        assert simulator.values["sp"] == "25"
        nursery.cancel_scope.cancel()

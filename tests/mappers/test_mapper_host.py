"""Mappers hosted in the edge kernel, run standalone by `kubeedge mapper run`, and fed by membership."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio
from mapperkit import Edge, ModbusSim, actual, device, model, state_is, write_yaml

from kubeedge import Kernel
from kubeedge.mappers.sdk.runtime import Mapper
from kubeedge.profile import build_profile
from kubeedge.registry import Plugins

BIN = Path(sys.executable).parent
DEVICE_ID = "default/boiler"
MODEL = model(
    "boiler-model",
    [
        {"name": "temperature", "type": "FLOAT", "accessMode": "ReadOnly"},
        {"name": "setpoint", "type": "INT", "accessMode": "ReadWrite", "minimum": "0", "maximum": "90"},
    ],
)
VISITORS = {
    "temperature": {"register": "InputRegister", "offset": 0, "scale": 0.1},
    "setpoint": {"register": "HoldingRegister", "offset": 10},
}


def boiler(port: int | str, **visitor_overrides: Any) -> dict[str, Any]:
    visitors = {**VISITORS, **visitor_overrides}
    return device("boiler", "boiler-model", {"ip": "127.0.0.1", "port": int(port)}, visitors, cycle_ms=100)


async def test_in_process_mappers_module_reports_twins_and_writes_desired(
    modbus_tcp: ModbusSim, edge: Edge, mosquitto: str, tmp_path: Path
) -> None:
    await modbus_tcp.set(4, 0, [615])
    await modbus_tcp.set(3, 10, [40])
    devices = write_yaml(tmp_path / "boiler.yaml", MODEL, boiler(modbus_tcp.port))
    profile = build_profile(
        {
            "role": "edge",
            "node": {"name": "edge-1"},
            "modules": {"mappers": {"broker": mosquitto, "membership": False}},
            "mappers": {"modbus": {"devices": [str(devices)]}},
        },
        data_dir=tmp_path,
    )
    kernel = Kernel.from_profile(profile)
    async with trio.open_nursery() as nursery:
        await nursery.start(kernel.run)
        assert kernel.ctx.states["mappers"] == "running"
        await edge.wait_for(f"$hw/events/device/{DEVICE_ID}/state/update", state_is("online"))
        await edge.wait_for(*actual(DEVICE_ID, "temperature", "61.5"))
        await edge.publish(f"$hw/events/device/{DEVICE_ID}/twin/update/delta", {"delta": {"setpoint": "65"}})
        await edge.wait_for(*actual(DEVICE_ID, "setpoint", "65"))
        assert await modbus_tcp.get(3, 10) == [65]
        kernel.stop()


async def test_devices_are_learned_from_membership_and_dropped_when_removed(
    modbus_tcp: ModbusSim, edge: Edge, mosquitto: str
) -> None:
    await modbus_tcp.set(4, 0, [200])
    await edge.client.subscribe("$hw/events/node/edge-1/membership/get")
    mapper = Mapper([Plugins().mapper_driver("modbus")], broker=mosquitto, node="edge-1")
    entry = {
        "id": DEVICE_ID,
        "name": "boiler",
        "state": "unknown",
        "twin": {"setpoint": {"expected": {"value": "33", "metadata": {"timestamp": 1}}, "metadata": {"type": "int"}}},
        "device": boiler(modbus_tcp.port),
        "model": MODEL,
    }
    async with trio.open_nursery() as nursery:
        await nursery.start(mapper.run)
        await edge.wait_for("$hw/events/node/edge-1/membership/get")
        # a device of another protocol in the list is left alone
        other: dict[str, Any] = {
            "id": "default/ble-thing",
            "device": {**boiler(1), "metadata": {"name": "ble-thing"}},
            "model": MODEL,
        }
        other["device"]["spec"] = {**other["device"]["spec"], "protocol": {"protocolName": "ble", "configData": {}}}
        await edge.publish("$hw/events/node/edge-1/membership/get/result", {"event_id": "1", "devices": [entry, other]})
        await edge.wait_for(*actual(DEVICE_ID, "temperature", "20"))
        # the twin's expected value is written once the device is connected
        await edge.wait_for(*actual(DEVICE_ID, "setpoint", "33"))
        assert await modbus_tcp.get(3, 10) == [33]
        assert set(mapper.workers) == {DEVICE_ID}

        await edge.publish(
            "$hw/events/node/edge-1/membership/updated",
            {"event_id": "2", "added_devices": [], "removed_devices": [{"id": DEVICE_ID, "name": "boiler"}]},
        )
        with trio.fail_after(5):
            while mapper.workers:
                await mapper._changed.wait()
        # and a bad device in an update is refused where the edge can see it, naming the field
        bad = {**entry, "device": boiler(modbus_tcp.port, setpoint={"register": "HoldingRegisters", "offset": 1})}
        await edge.publish("$hw/events/node/edge-1/membership/updated", {"added_devices": [bad], "removed_devices": []})
        result = await edge.wait_for(f"$hw/events/device/{DEVICE_ID}/twin/update/result")
        assert result["code"] == 400
        assert "spec.properties[1].visitors.configData.register" in result["reason"]
        assert "'HoldingRegisters'" in result["reason"]
        nursery.cancel_scope.cancel()


async def test_kubeedge_mapper_run_serves_a_device_file_over_mqtt(
    modbus_tcp: ModbusSim, edge: Edge, mosquitto: str, tmp_path: Path
) -> None:
    await modbus_tcp.set(4, 0, [321])
    devices = write_yaml(tmp_path / "boiler.yaml", MODEL, boiler(modbus_tcp.port))
    process = await trio.lowlevel.open_process(
        [
            str(BIN / "kubeedge"),
            "mapper",
            "run",
            "modbus",
            "--broker",
            mosquitto,
            "--node",
            "edge-1",
            "--device",
            str(devices),
        ],
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        await edge.wait_for(*actual(DEVICE_ID, "temperature", "32.1"), timeout=20)
        await edge.publish(f"$hw/events/device/{DEVICE_ID}/twin/update/delta", {"delta": {"setpoint": "12"}})
        await edge.wait_for(*actual(DEVICE_ID, "setpoint", "12"))
        assert await modbus_tcp.get(3, 10) == [12]
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_kubeedge_mapper_run_refuses_bad_input_with_a_clear_error(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "kubeedge"), "mapper", "run", *args], capture_output=True, text=True, timeout=60
        )

    proc = run("nosuch", "--broker", "mqtt://127.0.0.1:1")
    assert proc.returncode == 2
    assert "'nosuch'" in proc.stderr and "modbus" in proc.stderr
    bad = write_yaml(tmp_path / "bad.yaml", MODEL, boiler(502, temperature={"register": "InputRegister"}))
    proc = run("modbus", "--broker", "mqtt://127.0.0.1:1", "--device", str(bad))
    assert proc.returncode == 2
    assert "Device default/boiler: spec.properties[0].visitors.configData: 'offset' is a required" in proc.stderr
    missing = run("modbus", "--broker", "mqtt://127.0.0.1:1", "--device", str(tmp_path / "none.yaml"))
    assert missing.returncode == 2 and "none.yaml" in missing.stderr
    orphan = write_yaml(tmp_path / "orphan.yaml", boiler(502))
    proc = run("modbus", "--broker", "mqtt://127.0.0.1:1", "--device", str(orphan))
    assert proc.returncode == 2 and "DeviceModel 'boiler-model' is not in the file" in proc.stderr


async def test_mapper_rides_out_a_broker_restart(modbus_tcp: ModbusSim, tmp_path: Path) -> None:
    from mapperkit import MOSQUITTO, free_port, wait_port

    from kubeedge.mappers.sdk.mqtt import MqttClient

    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    broker = f"mqtt://127.0.0.1:{port}"

    def start_broker() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, proc, time.monotonic() + 10)
        return proc

    first = await trio.to_thread.run_sync(start_broker)
    await modbus_tcp.set(4, 0, [100])
    mapper = Mapper([Plugins().mapper_driver("modbus")], broker=broker, node="edge-1", devices=[])
    async with trio.open_nursery() as nursery:
        edge_client = MqttClient(broker, "test-edge-restart")
        await edge_client.subscribe("$hw/events/#")
        await nursery.start(edge_client.run)
        edge = Edge(edge_client)
        nursery.start_soon(edge.collect)
        await nursery.start(mapper.run)
        await edge.wait_for("$hw/events/node/edge-1/membership/get")
        entry = {"id": DEVICE_ID, "device": boiler(modbus_tcp.port), "model": MODEL}
        await edge.publish("$hw/events/node/edge-1/membership/get/result", {"devices": [entry]})
        await edge.wait_for(*actual(DEVICE_ID, "temperature", "10"))
        first.terminate()
        await trio.to_thread.run_sync(first.wait)
        await modbus_tcp.set(4, 0, [110])
        edge.clear()
        second = await trio.to_thread.run_sync(start_broker)
        try:
            # both clients come back by themselves; the mapper asks for its membership again
            await edge.wait_for("$hw/events/node/edge-1/membership/get", timeout=20)
            await edge.wait_for(*actual(DEVICE_ID, "temperature", "11"), timeout=20)
            assert mapper.client is not None and mapper.client.connections >= 2
        finally:
            second.terminate()
            await trio.to_thread.run_sync(second.wait)
        nursery.cancel_scope.cancel()

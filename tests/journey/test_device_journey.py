"""The device journey with real processes, as a user runs it (issue 8).

keadm init + `kubeedge run` (cloud), keadm join + `kubeedge run` (edge), a Modbus TCP thermostat
(pymodbus's server), kubectl: apply DeviceModel + Device -> membership -> the mapper polls -> the value,
converted and scaled, in Device.status.twins[].reported -> kubectl patch of a desired value -> the register
holds it -> reported follows. Then the cloud is killed: the edge keeps polling and answers local twin gets;
what changed meanwhile reaches the cloud when it is back. Then the edge restarts and carries on.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_asyncio
import yaml

from kubeedge.mappers.sdk.mqtt import MqttClient
from kubeedge.plugins.demo import manifests
from kubeedge.plugins.demo.run import Demo, join_edge, start_cloud
from kubeedge.plugins.demo.simulator import Thermostat

KUBECTL = str(Path(sys.executable).parent / "kubectl")
DEVICE = f"default/{manifests.DEVICE}"


class Journey:
    def __init__(self, demo: Demo, thermostat: Thermostat, cache: Path) -> None:
        self.demo = demo
        self.thermostat = thermostat
        self.cache = cache

    async def kubectl(self, *args: str, check: bool = True) -> str | None:
        assert self.demo.kubeconfig is not None
        result = await trio.run_process(
            [KUBECTL, "--kubeconfig", str(self.demo.kubeconfig), "--cache-dir", str(self.cache), *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        if result.returncode != 0:
            assert not check, result.stderr.decode()
            return None  # e.g. the cloud is still starting after a restart
        return result.stdout.decode()

    async def device(self) -> dict[str, Any]:
        text = await self.kubectl("get", "device", manifests.DEVICE, "-o", "json", check=False)
        return json.loads(text) if text else {}  # type: ignore[no-any-return]

    async def reported(self, name: str) -> str | None:
        for twin in ((await self.device()).get("status") or {}).get("twins") or []:
            if twin.get("propertyName") == name:
                return (twin.get("reported") or {}).get("value")  # type: ignore[no-any-return]
        return None

    async def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 40) -> None:  # noqa: ASYNC109
        with trio.move_on_after(timeout):
            while not await check():
                self.demo.check_alive()
                await trio.sleep(0.2)
            return
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.demo.root.glob("*.log"))
        raise AssertionError(f"timed out waiting for {what}\n{logs}")

    async def wait_reported(self, name: str, value: str) -> None:
        async def check() -> bool:
            return await self.reported(name) == value

        await self.wait_for(f"{name} reported as {value}", check)


@asynccontextmanager
async def journey(tmp_path: Path, *, standalone_mapper: bool) -> AsyncIterator[Journey]:
    demo = Demo(root=tmp_path / "demo", node="edge-journey")
    demo.root.mkdir()
    async with trio_asyncio.open_loop():
        async with trio.open_nursery() as nursery:
            thermostat = Thermostat(seed=7)
            # No drift: the test alone changes the device, so every expected value is exact.
            demo.modbus_port = await nursery.start(partial(thermostat.run, interval=3600))
            try:
                await start_cloud(demo)
                await join_edge(demo, in_process_mapper=not standalone_mapper)
                run = Journey(demo, thermostat, tmp_path / "kubectl-cache")
                documents = [manifests.device_model(), manifests.device(demo.node, demo.modbus_port)]
                manifest = tmp_path / "thermostat.yaml"
                manifest.write_text(yaml.safe_dump_all(documents, sort_keys=False))
                if standalone_mapper:
                    await demo.spawn(
                        "mapper",
                        [
                            "mapper",
                            "run",
                            "modbus",
                            "--broker",
                            f"mqtt://127.0.0.1:{demo.ports.mqtt}",
                            "--node",
                            demo.node,
                            "--device",
                            str(manifest),
                        ],
                        demo.root / "mapper.log",
                    )
                applied = await run.kubectl("apply", "-f", str(manifest)) or ""
                assert "devicemodel.devices.kubeedge.io/thermostat-model created" in applied
                assert "device.devices.kubeedge.io/thermostat created" in applied
                yield run
            finally:
                with trio.CancelScope(shield=True):
                    await demo.stop()
                nursery.cancel_scope.cancel()


async def local_twin_get(demo: Demo, prop: str) -> str | None:
    """Ask the edge's own broker for the device twin, as a mapper or edge app would with the cloud away."""
    client = MqttClient(f"mqtt://127.0.0.1:{demo.ports.mqtt}", "journey-test")
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await client.subscribe(f"$hw/events/device/{DEVICE}/twin/get/result")
        await client.publish(f"$hw/events/device/{DEVICE}/twin/get", json.dumps({"event_id": "g1", "timestamp": 0}))
        with trio.fail_after(10):
            async for _topic, payload in client.messages:
                result = json.loads(payload)
                if result.get("event_id") == "g1":
                    nursery.cancel_scope.cancel()
                    twin = (result.get("twin") or {}).get(prop) or {}
                    return (twin.get("actual") or {}).get("value")  # type: ignore[no-any-return]
    return None


@pytest.mark.parametrize("standalone_mapper", [False, True], ids=["in-process-mapper", "standalone-mapper"])
async def test_device_journey(tmp_path: Path, standalone_mapper: bool) -> None:
    async with journey(tmp_path, standalone_mapper=standalone_mapper) as run:
        demo, thermostat = run.demo, run.thermostat
        # Reported: a register change on the device reaches Device.status, scaled (x0.1) per the visitor.
        await thermostat.set_temperature(23.4)
        await run.wait_reported("temperature", "23.4")
        await run.wait_reported("setpoint", "21.5")
        await run.wait_reported("power", "true")
        device = await run.device()
        assert device["status"]["state"] == "online"

        # Desired: kubectl patch -> the mapper writes the holding register -> reported follows.
        patch = [{"op": "replace", "path": "/spec/properties/2/desired/value", "value": "25"}]
        await run.kubectl("patch", "device", manifests.DEVICE, "--type", "json", "-p", json.dumps(patch))

        async def register_holds() -> bool:
            return await thermostat.setpoint() == 25.0

        await run.wait_for("the setpoint register to hold 25.0", register_holds)
        await run.wait_reported("setpoint", "25")

        # The cloud goes away (killed): the edge keeps polling and answers twin gets locally.
        await demo.stop_node("cloud", kill=True)
        await thermostat.set_temperature(19.5)

        async def edge_has_it() -> bool:
            return await local_twin_get(demo, "temperature") == "19.5"

        await run.wait_for("the edge to hold the new temperature while the cloud is away", edge_has_it)
        await demo.restart_node("cloud")
        await run.wait_reported("temperature", "19.5")

        # The edge restarts: it comes back with its devices, reconnects, and values flow again.
        await demo.stop_node("edge")
        await demo.restart_node("edge")
        await thermostat.set_temperature(20.1)
        await run.wait_reported("temperature", "20.1")

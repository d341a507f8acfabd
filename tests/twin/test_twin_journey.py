"""The device journey end to end: kubectl applies a DeviceModel and a Device on the embedded apiserver;
devicecontroller -> cloudhub -> (mTLS link) -> edgehub -> twin -> a paho-mqtt mapper; the mapper's reports
reach ``Device.status``; a patched desired value reaches the mapper as a delta."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import trio
from apiserver.helpers import DEVICE_MODEL, device, manifest, running_cloud
from eventbus.edge_peers import mapper

from kubeedge import Kernel, Plugins
from kubeedge.plugins.common import pki
from kubeedge.profile import build_profile

DEV = "$hw/events/device/default/thermo-1"


def reported(cloud: Any, prop: str) -> str | None:
    for obj in cloud.objects("devices.kubeedge.io/devices", "default"):
        for entry in (obj.get("status") or {}).get("twins") or []:
            if entry.get("propertyName") == prop:
                return (entry.get("reported") or {}).get("value")
    return None


async def test_kubectl_device_to_mapper_and_back(tmp_path: Path) -> None:
    from kubeedge.plugins.cloudhub.hub import CloudHub
    from kubeedge.plugins.devicecontroller.controller import DeviceController
    from kubeedge.plugins.edgehub.hub import EdgeHub
    from kubeedge.plugins.eventbus.module import EventBus
    from kubeedge.plugins.twin.module import DeviceTwin

    hub = CloudHub({"address": "127.0.0.1", "port": 0, "httpsPort": 0, "keepaliveInterval": 5})
    async with running_cloud(tmp_path / "cloud", [hub, DeviceController({})]) as cloud:
        assert hub.ca is not None
        edgehub = EdgeHub(
            {
                "server": f"127.0.0.1:{hub.port}",
                "httpServer": f"https://127.0.0.1:{hub.https_port}",
                "token": pki.make_token(hub.ca),
                "heartbeat": 1,
                "reconnectMin": 0.05,
                "reconnectMax": 0.5,
            }
        )
        eventbus = EventBus({"mqttMode": 0, "mqttServerInternal": "tcp://127.0.0.1:0"})
        profile = build_profile({"role": "edge", "node": {"name": "edge-1"}, "modules": {}}, data_dir=tmp_path / "edge")
        edge = Kernel(profile, Plugins(), [edgehub, eventbus, DeviceTwin({})])
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(edge.run, handle_signals=False))
            with trio.fail_after(15):
                await edgehub.connected.wait()
            async with mapper(eventbus.internal_port, "$hw/events/#") as m:
                await cloud.kubectl("apply", "-f", "-", stdin=manifest(DEVICE_MODEL, device()))
                updated = json.loads(await m.expect("$hw/events/node/edge-1/membership/updated", timeout=20))
                assert [d["id"] for d in updated["added_devices"]] == ["default/thermo-1"]
                delta = json.loads(await m.expect(f"{DEV}/twin/update/delta"))
                assert delta["delta"] == {"setpoint": "20"}

                # The mapper wrote the setpoint and reads the temperature; both reach Device.status.
                report = {
                    "event_id": "r1",
                    "timestamp": 1_700_000_000_000,
                    "twin": {
                        "setpoint": {"actual": {"value": "20"}, "metadata": {"type": "int"}},
                        "temperature": {"actual": {"value": "21"}, "metadata": {"type": "int"}},
                    },
                }
                await m.publish(f"{DEV}/twin/update", json.dumps(report))
                assert "code" not in json.loads(await m.expect(f"{DEV}/twin/update/result"))
                await cloud.wait_for(lambda: reported(cloud, "temperature") == "21", timeout=20)
                assert reported(cloud, "setpoint") == "20"

                await cloud.kubectl(
                    "patch",
                    "device",
                    "thermo-1",
                    "--type",
                    "json",
                    "-p",
                    json.dumps([{"op": "replace", "path": "/spec/properties/1/desired/value", "value": "23"}]),
                )
                while True:
                    delta = json.loads(await m.expect(f"{DEV}/twin/update/delta", timeout=20))
                    if delta["delta"].get("setpoint") == "23":
                        break
            edge.stop()

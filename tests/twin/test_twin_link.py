"""A paho mapper drives a device twin end to end on an edge joined to a cloud over the real link
(cloudhub + edgehub, mTLS), in each mqttMode. The cloud's devicecontroller is a recorder here: it sends what
devicecontroller sends (membership, desired values) and keeps what the edge reports."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from eventbus.edge_peers import CloudStub, Mosquitto, mapper

from kubeedge import Kernel, Message, Plugins
from kubeedge.plugins.common import pki
from kubeedge.profile import build_profile

NODE = "edge-1"
DEV = "$hw/events/device/default/foo"


class DeviceControllerRecorder(CloudStub):
    name = "devicecontroller"
    group = "devicecontroller"


@asynccontextmanager
async def joined(
    tmp_path: Path, eventbus: dict[str, Any]
) -> AsyncIterator[tuple[Kernel, Any, DeviceControllerRecorder]]:
    from kubeedge.plugins.cloudhub.hub import CloudHub
    from kubeedge.plugins.edgehub.hub import EdgeHub
    from kubeedge.plugins.eventbus.module import EventBus
    from kubeedge.plugins.twin.module import DeviceTwin

    controller = DeviceControllerRecorder()
    hub = CloudHub({"address": "127.0.0.1", "port": 0, "httpsPort": 0, "keepaliveInterval": 5})
    cloud = Kernel(
        build_profile({"role": "cloud", "modules": {}}, data_dir=tmp_path / "cloud"), Plugins(), [hub, controller]
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(cloud.run, handle_signals=False))
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
        bus = EventBus(eventbus)
        profile = build_profile({"role": "edge", "node": {"name": NODE}, "modules": {}}, data_dir=tmp_path / "edge")
        edge = Kernel(profile, Plugins(), [edgehub, bus, DeviceTwin({})])
        await nursery.start(partial(edge.run, handle_signals=False))
        with trio.fail_after(15):
            await edgehub.connected.wait()
            if bus.external is not None:
                await bus.external.wait_connected()
        try:
            yield cloud, bus, controller
        finally:
            edge.stop()
            cloud.stop()


@pytest.mark.parametrize("mode", [0, 1, 2])
async def test_mapper_drives_a_twin_across_the_link(tmp_path: Path, mode: int) -> None:
    broker = Mosquitto(tmp_path)
    if mode >= 1:
        await broker.start()
    config = {
        "mqttMode": mode,
        "mqttServerInternal": "tcp://127.0.0.1:0",
        "mqttServerExternal": f"tcp://127.0.0.1:{broker.port}",
    }
    try:
        async with joined(tmp_path, config) as (cloud, bus, controller):
            port = bus.internal_port if mode == 0 else broker.port
            async with mapper(port, "$hw/events/#") as m:
                await cloud.ctx.send(
                    "cloudhub",
                    Message(
                        source="devicecontroller",
                        group="twin",
                        operation="update",
                        resource=f"node/{NODE}/membership",
                        content={
                            "event_id": "add",
                            "timestamp": 1,
                            "added_devices": [
                                {
                                    "id": "default/foo",
                                    "name": "foo",
                                    "twin": {
                                        "power": {"expected": {"value": "on"}, "metadata": {"type": "string"}},
                                    },
                                }
                            ],
                            "removed_devices": [],
                        },
                    ),
                )
                updated = json.loads(await m.expect(f"$hw/events/node/{NODE}/membership/updated"))
                assert updated["added_devices"][0]["id"] == "default/foo"
                assert json.loads(await m.expect(f"{DEV}/twin/update/delta"))["delta"] == {"power": "on"}

                # The mapper wrote the device and reports; the value reaches the cloud.
                await m.publish(f"{DEV}/twin/update", '{"event_id":"r","twin":{"power":{"actual":{"value":"on"}}}}')
                assert (
                    json.loads(await m.expect(f"{DEV}/twin/update/result"))["twin"]["power"]["actual"]["value"] == "on"
                )
                reported = await controller.expect(
                    lambda msg: msg.resource == f"node/{NODE}/device/default/foo/twin/edge_updated"
                )
                assert reported.content["twin"]["power"]["actual"]["value"] == "on"

                # A desired change in the cloud reaches the mapper as a delta.
                await cloud.ctx.send(
                    "cloudhub",
                    Message(
                        source="devicecontroller",
                        group="twin",
                        operation="update",
                        resource=f"node/{NODE}/device/default/foo/twin/cloud_updated",
                        content={"event_id": "d", "twin": {"power": {"expected": {"value": "off"}}}},
                    ),
                )
                delta = json.loads(await m.expect(f"{DEV}/twin/update/delta"))
                assert delta["delta"] == {"power": "off"}

                # An upload topic goes to the cloud router (here: cloudhub finds no router and drops it;
                # the device path above is what matters) and a state report reaches devicecontroller.
                await m.publish(f"{DEV}/state/update", '{"event_id":"s","state":"online"}')
                await m.expect(f"{DEV}/state/update/result")
                state = await controller.expect(lambda msg: msg.resource.endswith("/device/default/foo/state/update"))
                assert state.content["state"] == "online"
    finally:
        await broker.stop()

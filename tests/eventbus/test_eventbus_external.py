"""mqttMode 2 (external mosquitto) and 1 (both), with a real mosquitto started per test; restarts mid-stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from eventbus.edge_peers import Mosquitto, Node, edge_node, mapper
from kubeedge import Message

DEV = "$hw/events/device/default/foo"

# No skip when mosquitto is missing: these tests must fail loudly (apt-get install mosquitto mosquitto-clients).


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


async def connected(node: Node, count: int = 1) -> None:
    """Wait until the eventbus's external client has connected ``count`` times (it subscribes first)."""
    with trio.fail_after(15):
        await node.eventbus.external.wait_connected(count)


async def publish(node: Node, topic: str, content: str) -> None:
    """Publish through the eventbus and wait until it has handled the request."""
    reply = await node.ctx.send_sync(
        "eventbus", Message(source="t", operation="publish", resource=topic, content=content), timeout=5
    )
    assert reply.content == "OK"


async def add_foo(node: Node) -> None:
    await node.ctx.send(
        "twin",
        Message(
            source="devicecontroller",
            group="twin",
            operation="update",
            resource="membership",
            content={"added_devices": [{"id": "default/foo", "name": "foo"}], "removed_devices": []},
        ),
    )


async def test_external_mode_twin_round_trip_through_mosquitto(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = {"mqttMode": "external", "mqttServerExternal": f"tcp://127.0.0.1:{mosquitto.port}"}
    async with edge_node(tmp_path / "node", eventbus=config) as node:
        assert node.eventbus.broker is None and node.eventbus.internal_port is None
        await connected(node)
        async with mapper(mosquitto.port, "$hw/events/#") as m:
            await add_foo(node)
            await m.expect("$hw/events/node/edge-1/membership/updated")
            await m.publish(f"{DEV}/twin/update", '{"event_id":"x","twin":{"t":{"actual":{"value":"7"}}}}')
            result = json.loads(await m.expect(f"{DEV}/twin/update/result"))
            assert result["twin"]["t"]["actual"]["value"] == "7"
            await m.publish("$hw/events/upload/ext", "up")
            assert (await node.cloud.expect(lambda msg: msg.resource == "$hw/events/upload/ext")).content == "up"
            await m.publish(f"{DEV}/twin/update", "garbage")
            reply = json.loads(await m.expect("$hw/events/device//twin/update/result"))
            assert reply["code"] == 400


async def test_external_broker_restarted_mid_stream_loses_nothing_published(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    config = {"mqttMode": 2, "mqttServerExternal": f"tcp://127.0.0.1:{mosquitto.port}", "mqttQOS": 1}
    async with (
        edge_node(tmp_path / "node", eventbus=config) as node,
        # A persistent session: mosquitto keeps its subscription and queues for it across the restart.
        mapper(mosquitto.port, "stream/#", client_id="app", clean_session=False) as app,
    ):
        await connected(node)
        for i in range(20):
            await publish(node, "stream/a", str(i))
        for i in range(20):
            assert await app.expect("stream/a") == str(i).encode()
        await mosquitto.stop()
        with trio.fail_after(10):
            await node.eventbus.external.wait_disconnected()
        # Modules keep publishing while the broker is away: kept in the bounded buffer.
        for i in range(20, 50):
            await publish(node, "stream/a", str(i))
        assert len(node.eventbus.external.buffer) == 30
        await mosquitto.start()
        # QoS 1 is at least once: mosquitto may deliver again what the app had not acknowledged before it stopped.
        got: list[int] = []
        while 49 not in got:
            got.append(int(await app.expect("stream/a", timeout=20)))
        assert [i for i in got if i >= 20] == list(range(20, 50))
        await connected(node, 2)
        assert not node.eventbus.external.buffer
        # And MQTT -> edge works again after the reconnect.
        await app.publish("$hw/events/upload/back", "again")
        assert (await node.cloud.expect(lambda msg: msg.resource == "$hw/events/upload/back")).content == "again"


async def test_publish_buffer_is_bounded(tmp_path: Path) -> None:
    # No broker at all: everything waits in the buffer, the oldest go first once it is full.
    from eventbus.edge_peers import free_port

    config = {"mqttMode": 2, "mqttServerExternal": f"tcp://127.0.0.1:{free_port()}", "maxBuffer": 10}
    async with edge_node(tmp_path, eventbus=config, twin=False) as node:
        for i in range(25):
            await publish(node, "x/y", str(i))
        link = node.eventbus.external
        assert [p for _, p, _, _ in link.buffer] == [str(i).encode() for i in range(15, 25)]
        assert link.dropped == 15


async def test_both_mode_serves_mappers_on_either_broker(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = {"mqttMode": 1, "mqttServerExternal": f"tcp://127.0.0.1:{mosquitto.port}"}
    async with edge_node(tmp_path / "node", eventbus=config) as node:
        await connected(node)
        async with (
            mapper(node.eventbus.internal_port, "$hw/events/#") as inside,
            mapper(mosquitto.port, "$hw/events/#") as outside,
        ):
            await add_foo(node)
            # Publishes go to both brokers, as KubeEdge does in mode 1.
            await inside.expect("$hw/events/node/edge-1/membership/updated")
            await outside.expect("$hw/events/node/edge-1/membership/updated")
            await inside.publish(f"{DEV}/twin/update", '{"event_id":"in","twin":{"a":{"actual":{"value":"1"}}}}')
            assert json.loads(await inside.expect(f"{DEV}/twin/update/result"))["event_id"] == "in"
            # The twin's replies reach both brokers.
            assert json.loads(await outside.expect(f"{DEV}/twin/update/result"))["event_id"] == "in"
            await outside.publish(f"{DEV}/twin/update", '{"event_id":"out","twin":{"b":{"actual":{"value":"2"}}}}')
            assert json.loads(await outside.expect(f"{DEV}/twin/update/result"))["event_id"] == "out"
            assert json.loads(await inside.expect(f"{DEV}/twin/update/result"))["event_id"] == "out"
            await outside.publish(f"{DEV}/twin/get", '{"event_id":"g"}')
            twins = json.loads(await outside.expect(f"{DEV}/twin/get/result"))["twin"]
            assert set(twins) == {"a", "b"}


async def test_internal_broker_restart_mid_stream(tmp_path: Path) -> None:
    """The edge restarts (and with it the embedded broker, on the same port); a mapper with paho's automatic
    reconnect carries on, and the twin kept its devices."""
    from eventbus.edge_peers import free_port

    port = free_port()
    config = {"mqttServerInternal": f"tcp://127.0.0.1:{port}"}
    async with edge_node(tmp_path, eventbus=config) as node, mapper(port, "$hw/events/#") as m:
        await add_foo(node)
        await m.expect("$hw/events/node/edge-1/membership/updated")
        await m.publish(f"{DEV}/twin/update", '{"event_id":"1","twin":{"t":{"actual":{"value":"1"}}}}')
        await m.expect(f"{DEV}/twin/update/result")
        # Stop the node under the connected mapper, start it again on the same port.
        node.kernel.stop()
        with trio.fail_after(10):
            await m.wait_disconnected()
        async with edge_node(tmp_path, eventbus=config) as node2:
            with trio.fail_after(15):
                await m.wait_connects(2)
            await m.subscribe("$hw/events/#")
            await m.publish(f"{DEV}/twin/update", '{"event_id":"2","twin":{"t":{"actual":{"value":"2"}}}}')
            result = json.loads(await m.expect(f"{DEV}/twin/update/result"))
            assert result["event_id"] == "2"
            assert node2.twin.devices["default/foo"].twins["t"].actual == "2"

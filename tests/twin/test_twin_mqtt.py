"""The device twin driven by a paho-mqtt mapper over the embedded broker, replies checked byte for byte
against what a real edgecore v1.23 sends (reference/kubeedge-observed.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import trio
from eventbus.edge_peers import CloudStub, Node, PahoMapper, edge_node, mapper

from kubeedge import Message

DEV = "$hw/events/device/default/foo"
NODE = "$hw/events/node/edge-1"
TS = r"\d{13}"


def membership(*devices: dict[str, Any], removed: list[str] | None = None, event_id: str = "ev") -> Message:
    return Message(
        source="devicecontroller",
        group="twin",
        operation="update",
        resource="membership",
        content={
            "event_id": event_id,
            "timestamp": 1,
            "added_devices": list(devices),
            "removed_devices": [{"id": d} for d in removed or []],
        },
    )


async def add_foo(node: Node, m: PahoMapper, **extra: Any) -> dict[str, Any]:
    await node.cloud.down("twin", membership({"id": "default/foo", "name": "foo", **extra}))
    return json.loads(await m.expect(f"{NODE}/membership/updated"))


async def test_unknown_device_update_get_and_bad_json_answer_like_edgecore(tmp_path: Path) -> None:
    async with edge_node(tmp_path) as node, mapper(node.eventbus.internal_port, "$hw/events/#") as m:
        await m.publish(f"{DEV}/twin/update", '{"event_id":"x","timestamp":0,"twin":{"t":{"actual":{"value":"1"}}}}')
        reply = await m.expect(f"{DEV}/twin/update/result")
        assert re.fullmatch(
            rb'\{"event_id":"x","timestamp":' + TS.encode() + rb',"code":404,'
            rb'"reason":"update rejected due to the device is not existed"\}',
            reply,
        ), reply
        await m.publish(f"{DEV}/twin/get", '{"event_id":"g1","timestamp":0}')
        reply = await m.expect(f"{DEV}/twin/get/result")
        assert re.fullmatch(
            rb'\{"event_id":"g1","timestamp":\d{13},"code":404,'
            rb'"reason":"Device default/foo not found while getting twin"\}',
            reply,
        ), reply
        await m.publish(f"{DEV}/twin/update", "this is not json")
        reply = await m.expect("$hw/events/device//twin/update/result")
        assert re.fullmatch(
            rb'\{"event_id":"","timestamp":\d{13},"code":400,'
            rb'"reason":"Unmarshal update request body failed, please check the request"\}',
            reply,
        ), reply
        await m.publish(f"{NODE}/membership/get", '{"event_id":"m1"}')
        reply = await m.expect(f"{NODE}/membership/get/result")
        assert re.fullmatch(rb'\{"event_id":"m1","timestamp":\d{13},"devices":\[\]\}', reply), reply


async def test_unknown_device_state_and_old_topics_get_no_reply(tmp_path: Path) -> None:
    async with edge_node(tmp_path) as node, mapper(node.eventbus.internal_port, "$hw/events/#") as m:
        await m.publish(f"{DEV}/state/update", '{"event_id":"s","timestamp":0,"state":"online"}')
        await m.publish("$hw/events/device/foo/twin/update", '{"event_id":"old"}')
        # Replies keep the order of requests; the membership result proves nothing came before it.
        await m.publish(f"{NODE}/membership/get", '{"event_id":"marker"}')
        await m.expect(f"{NODE}/membership/get/result")
        assert m.received_on(f"{DEV}/state/update/result") == []
        assert m.received_on("$hw/events/device/foo/twin/update/result") == []


async def test_mapper_drives_a_twin_end_to_end(tmp_path: Path) -> None:
    async with edge_node(tmp_path) as node, mapper(node.eventbus.internal_port, "$hw/events/#") as m:
        await node.cloud.link("cloud_connected")
        updated = await add_foo(node, m)
        assert updated["added_devices"] == [{"id": "default/foo", "name": "foo", "state": "unknown"}]
        assert updated["removed_devices"] is None

        await m.publish(f"{DEV}/twin/update", '{"event_id":"x","timestamp":0,"twin":{"t":{"actual":{"value":"1"}}}}')
        reply = await m.expect(f"{DEV}/twin/update/result")
        assert re.fullmatch(
            rb'\{"event_id":"x","timestamp":\d{13},"twin":\{"t":\{"actual":\{"value":"1","metadata":\{"timestamp":\d{13}\}\},'
            rb'"optional":true,"metadata":\{"type":"string"\}\}\}\}',
            reply,
        ), reply
        document = json.loads(await m.expect(f"{DEV}/twin/update/document"))
        assert document["twin"]["t"]["last"] is None
        assert document["twin"]["t"]["current"]["actual"]["value"] == "1"

        up = await node.cloud.expect(lambda msg: msg.resource == "device/default/foo/twin/edge_updated")
        assert (up.source, up.group, up.operation) == ("twin", "twin", "update")
        assert up.content["twin"]["t"]["actual"]["value"] == "1"
        assert up.content["twin"]["t"]["metadata"] == {"type": "string"}

        # A typed update as mappers-go builds it, then a get.
        await m.publish(
            f"{DEV}/twin/update",
            '{"event_id":"","timestamp":1700000000000,"twin":{"temperature":{"actual":{"value":"2"},'
            '"metadata":{"type":"int"}}}}',
        )
        result = json.loads(await m.expect(f"{DEV}/twin/update/result"))
        assert result["twin"]["temperature"]["metadata"] == {"type": "int"}
        await m.publish(f"{DEV}/twin/get", '{"event_id":"123456","timestamp":0}')
        got = json.loads(await m.expect(f"{DEV}/twin/get/result"))
        assert got["event_id"] == "123456"
        assert got["twin"]["temperature"]["actual"]["value"] == "2"
        assert got["twin"]["t"]["actual"]["value"] == "1"

        await m.publish(f"{NODE}/membership/get", '{"event_id":"m2"}')
        members = json.loads(await m.expect(f"{NODE}/membership/get/result"))
        assert members["devices"] == [{"id": "default/foo", "name": "foo", "state": "unknown"}]


async def test_state_updates(tmp_path: Path) -> None:
    async with edge_node(tmp_path) as node, mapper(node.eventbus.internal_port, "$hw/events/#") as m:
        await node.cloud.link("cloud_connected")
        await add_foo(node, m)
        await m.publish(f"{DEV}/state/update", '{"event_id":"s1","timestamp":1700000000000,"state":"online"}')
        result = json.loads(await m.expect(f"{DEV}/state/update/result"))
        assert result["event_id"] == "s1"
        assert result["device"]["state"] == "online"
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", result["device"]["last_online"])
        up = await node.cloud.expect(lambda msg: msg.resource == "device/default/foo/state/update")
        assert up.content["state"] == "online"

        await m.publish(f"{DEV}/state/update", '{"event_id":"s2","state":"dancing"}')
        bad = json.loads(await m.expect(f"{DEV}/state/update/result"))
        assert (bad["event_id"], bad["code"]) == ("s2", 400)
        assert "dancing" in bad["reason"]
        await m.publish(f"{DEV}/state/update", "{")
        bad = json.loads(await m.expect(f"{DEV}/state/update/result"))
        assert bad["code"] == 400


async def test_key_and_value_rules_and_bad_shapes_get_400(tmp_path: Path) -> None:
    async with edge_node(tmp_path) as node, mapper(node.eventbus.internal_port, "$hw/events/#") as m:
        await add_foo(node, m)
        cases = [
            ('{"event_id":"k","twin":{"bad key!":{"actual":{"value":"1"}}}}', "The key of twin"),
            ('{"event_id":"k","twin":{"' + "k" * 129 + '":{"actual":{"value":"1"}}}}', "The key of twin"),
            ('{"event_id":"k","twin":{"t":{"actual":{"value":"a\\"b"}}}}', "The value of twin"),
            ('{"event_id":"k","twin":{"t":{"actual":{"value":"' + "v" * 513 + '"}}}}', "The value of twin"),
            ('{"event_id":"k","twin":{"t":{"actual":{"value":5}}}}', "Unmarshal update request body failed"),
            ('{"event_id":"k","twin":["t"]}', "Unmarshal update request body failed"),
            ('{"event_id":"k"}', "Update twin error, key:twin does not exist"),
            ('{"event_id":"k","twin":{"with space":{"actual":{"value":"1"}}}}', "The key of twin"),
            ('{"event_id":"k","twin":{"t":{"actual":{"value":""}}}}', "The value of twin"),
            ('{"event_id":"k","twin":{"t":{"actual":{"value":"1.5e+3"}}}}', "The value of twin"),
        ]
        for payload, reason in cases:
            await m.publish(f"{DEV}/twin/update", payload)
            reply = json.loads(await m.expect(f"{DEV}/twin/update/result"))
            assert reply["code"] == 400, payload
            assert reply["event_id"] == "k"
            assert reply["reason"].startswith(reason), (payload, reply)
        # Nothing was stored by the refused updates.
        await m.publish(f"{DEV}/twin/get", '{"event_id":"g"}')
        assert json.loads(await m.expect(f"{DEV}/twin/get/result"))["twin"] == {}
        # Allowed characters pass: letters, digits and - _ . , : / @ #
        await m.publish(
            f"{DEV}/twin/update", '{"event_id":"ok","twin":{"a-b_c.d":{"actual":{"value":"-1.5,x:y/z@w#2"}}}}'
        )
        assert "code" not in json.loads(await m.expect(f"{DEV}/twin/update/result"))


async def test_desired_values_reach_the_mapper_as_delta(tmp_path: Path) -> None:
    twin = {"power": {"expected": {"value": "on", "metadata": {"timestamp": 100}}, "metadata": {"type": "string"}}}
    async with edge_node(tmp_path) as node, mapper(node.eventbus.internal_port, "$hw/events/#") as m:
        updated = await add_foo(node, m, twin=twin)
        assert updated["added_devices"][0]["twin"]["power"]["expected"]["value"] == "on"
        delta = json.loads(await m.expect(f"{DEV}/twin/update/delta"))
        assert delta["delta"] == {"power": "on"}
        assert delta["twin"]["power"]["expected"]["value"] == "on"

        # The mapper reports the value it wrote: no delta any more.
        await m.publish(f"{DEV}/twin/update", '{"event_id":"r","twin":{"power":{"actual":{"value":"on"}}}}')
        await m.expect(f"{DEV}/twin/update/result")
        await m.expect(f"{DEV}/twin/update/document")
        # The cloud changes its mind.
        await node.cloud.down(
            "twin",
            Message(
                source="devicecontroller",
                group="twin",
                operation="update",
                resource="device/default/foo/twin/cloud_updated",
                content={"event_id": "c", "timestamp": 200, "twin": {"power": {"expected": {"value": "off"}}}},
            ),
        )
        document = json.loads(await m.expect(f"{DEV}/twin/update/document"))
        assert document["twin"]["power"]["last"]["expected"]["value"] == "on"
        assert document["twin"]["power"]["current"]["expected"]["value"] == "off"
        delta = json.loads(await m.expect(f"{DEV}/twin/update/delta"))
        assert delta["delta"] == {"power": "off"}
        assert delta["twin"]["power"]["actual"]["value"] == "on"
        # Exactly one delta was sent meanwhile (none after the matching report).
        assert m.received_on(f"{DEV}/twin/update/delta") == []

        # An older desired value never replaces a newer one.
        await node.cloud.down(
            "twin",
            Message(
                source="devicecontroller",
                group="twin",
                operation="update",
                resource="device/default/foo/twin/cloud_updated",
                content={
                    "event_id": "old",
                    "twin": {"power": {"expected": {"value": "x", "metadata": {"timestamp": 150}}}},
                },
            ),
        )
        await m.publish(f"{DEV}/twin/get", '{"event_id":"g"}')
        got = json.loads(await m.expect(f"{DEV}/twin/get/result"))
        assert got["twin"]["power"]["expected"]["value"] == "off"


async def test_membership_changes(tmp_path: Path) -> None:
    mappers = MappersRecorder()
    async with edge_node(tmp_path, extra=[mappers]) as node, mapper(node.eventbus.internal_port, "$hw/events/#") as m:
        await add_foo(
            node, m, attributes={"address": {"value": "longgang", "optional": True, "metadata": {"type": "string"}}}
        )
        forwarded = await mappers.expect(lambda msg: msg.resource == "membership")
        assert forwarded.content["added_devices"][0]["id"] == "default/foo"
        await m.publish(f"{NODE}/membership/get", '{"event_id":"m"}')
        members = json.loads(await m.expect(f"{NODE}/membership/get/result"))
        assert members["devices"][0]["attributes"] == {
            "address": {"value": "longgang", "optional": True, "metadata": {"type": "string"}}
        }
        # A repeated add without twin: edgecore answers 400 on the device's update result.
        await node.cloud.down("twin", membership({"id": "default/foo", "name": "foo"}, event_id="again"))
        reply = json.loads(await m.expect(f"{DEV}/twin/update/result"))
        reason = "Update twin error, key:twin does not exist"
        assert (reply["event_id"], reply["code"], reply["reason"]) == ("again", 400, reason)
        await m.expect(f"{NODE}/membership/updated")

        await node.cloud.down("twin", membership(removed=["default/foo"]))
        updated = json.loads(await m.expect(f"{NODE}/membership/updated"))
        assert updated["added_devices"] is None
        assert updated["removed_devices"][0]["id"] == "default/foo"
        await m.publish(f"{DEV}/twin/update", '{"event_id":"gone","twin":{"t":{"actual":{"value":"1"}}}}')
        assert json.loads(await m.expect(f"{DEV}/twin/update/result"))["code"] == 404


class MappersRecorder(CloudStub):
    name = "mappers"
    group = "mappers"


async def test_reports_kept_while_the_cloud_is_away_newest_wins(tmp_path: Path) -> None:
    async with edge_node(tmp_path) as node, mapper(node.eventbus.internal_port, "$hw/events/#") as m:
        await add_foo(node, m)
        for value, stamp in (("1", 1000), ("3", 3000), ("2", 2000)):
            await m.publish(
                f"{DEV}/twin/update",
                json.dumps({"event_id": value, "timestamp": stamp, "twin": {"t": {"actual": {"value": value}}}}),
            )
            await m.expect(f"{DEV}/twin/update/result")
        await m.publish(f"{DEV}/state/update", '{"event_id":"s","state":"online"}')
        await m.expect(f"{DEV}/state/update/result")
        assert not node.cloud.taken(lambda msg: msg.resource.startswith("device/"))

        await node.cloud.link("cloud_connected")
        up = await node.cloud.expect(lambda msg: msg.resource == "device/default/foo/twin/edge_updated")
        assert up.content["twin"]["t"]["actual"] == {"value": "3", "metadata": {"timestamp": 3000}}
        state = await node.cloud.expect(lambda msg: msg.resource == "device/default/foo/state/update")
        assert state.content["state"] == "online"
        detail = await node.cloud.expect(lambda msg: msg.resource == "membership/detail")
        assert detail.operation == "get"

        # Sent once: nothing more is pending after a second connect.
        await node.cloud.link("cloud_disconnected")
        await node.cloud.link("cloud_connected")
        await node.cloud.expect(lambda msg: msg.resource == "membership/detail")
        assert not node.cloud.taken(lambda msg: msg.resource.startswith("device/"))


async def test_twins_and_pending_reports_survive_a_restart(tmp_path: Path) -> None:
    async with edge_node(tmp_path) as node, mapper(node.eventbus.internal_port, "$hw/events/#") as m:
        await add_foo(node, m, twin={"power": {"expected": {"value": "on"}}})
        await m.publish(
            f"{DEV}/twin/update", '{"event_id":"r","timestamp":5000,"twin":{"power":{"actual":{"value":"off"}}}}'
        )
        await m.expect(f"{DEV}/twin/update/result")
    async with edge_node(tmp_path) as node, mapper(node.eventbus.internal_port, "$hw/events/#") as m:
        await m.publish(f"{DEV}/twin/get", '{"event_id":"g"}')
        got = json.loads(await m.expect(f"{DEV}/twin/get/result"))
        assert got["twin"]["power"]["expected"]["value"] == "on"
        assert got["twin"]["power"]["actual"] == {"value": "off", "metadata": {"timestamp": 5000}}
        await node.cloud.link("cloud_connected")
        up = await node.cloud.expect(lambda msg: msg.resource == "device/default/foo/twin/edge_updated")
        assert up.content["twin"]["power"]["actual"]["value"] == "off"


async def test_full_membership_detail_replaces_the_device_list(tmp_path: Path) -> None:
    async with edge_node(tmp_path) as node, mapper(node.eventbus.internal_port, "$hw/events/#") as m:
        await add_foo(node, m)
        await node.cloud.down(
            "twin",
            Message(
                source="devicecontroller",
                group="twin",
                operation="response",
                resource="membership/detail",
                content={"event_id": "d", "devices": [{"id": "default/bar", "name": "bar"}]},
            ),
        )
        updated = json.loads(await m.expect(f"{NODE}/membership/updated"))
        assert [d["id"] for d in updated["added_devices"]] == ["default/bar"]
        assert [d["id"] for d in updated["removed_devices"]] == ["default/foo"]


async def test_cloud_messages_it_does_not_understand_are_ignored(tmp_path: Path) -> None:
    async with edge_node(tmp_path) as node, mapper(node.eventbus.internal_port, "$hw/events/#") as m:
        for message in (
            Message(source="x", group="twin", operation="update", resource="membership", content="not json"),
            Message(
                source="x", group="twin", operation="update", resource="membership", content={"added_devices": [1]}
            ),
            Message(source="x", group="twin", operation="dance", resource="elsewhere", content=None),
            Message(source="x", group="twin", operation="update", resource="device/a/b/twin/cloud_updated", content={}),
        ):
            await node.cloud.down("twin", message)
        await m.publish(f"{NODE}/membership/get", '{"event_id":"alive"}')
        assert json.loads(await m.expect(f"{NODE}/membership/get/result"))["event_id"] == "alive"
        assert node.ctx.states["twin"] == "running"


async def test_query_over_the_bus(tmp_path: Path) -> None:
    async with edge_node(tmp_path) as node, mapper(node.eventbus.internal_port, "$hw/events/#") as m:
        await add_foo(node, m)
        with trio.fail_after(5):
            reply = await node.ctx.send_sync(
                "twin", Message(source="mappers", group="twin", operation="query", resource="device/default/foo")
            )
        assert reply.content["id"] == "default/foo"


async def test_unreadable_get_and_membership_requests_get_400(tmp_path: Path) -> None:
    async with edge_node(tmp_path) as node, mapper(node.eventbus.internal_port, "$hw/events/#") as m:
        await add_foo(node, m)
        await m.publish(f"{DEV}/twin/get", "[1, 2]")
        reply = json.loads(await m.expect(f"{DEV}/twin/get/result"))
        assert (reply["code"], reply["reason"]) == (400, "Unmarshal get request body failed, please check the request")
        await m.publish(f"{NODE}/membership/get", "{not json")
        reply = json.loads(await m.expect(f"{NODE}/membership/get/result"))
        assert reply["code"] == 400
        # An empty body is a request with no event id (what simple clients send).
        await m.publish(f"{DEV}/twin/get", "")
        assert json.loads(await m.expect(f"{DEV}/twin/get/result"))["twin"] == {}
        await m.publish(f"{NODE}/membership/get", "")
        assert len(json.loads(await m.expect(f"{NODE}/membership/get/result"))["devices"]) == 1


async def test_membership_carries_device_and_model_for_mappers_across_a_restart(tmp_path: Path) -> None:
    device = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": "foo"},
        "spec": {"protocol": {"protocolName": "modbus", "configData": {"ip": "10.0.0.2"}}},
    }
    model = {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel", "metadata": {"name": "foo-model"}}
    async with edge_node(tmp_path) as node, mapper(node.eventbus.internal_port, "$hw/events/#") as m:
        updated = await add_foo(node, m, device=device, model=model)
        assert updated["added_devices"][0]["device"] == device
        assert updated["added_devices"][0]["model"] == model
    # Restarted with the cloud away: a standalone mapper asking for membership still learns the device.
    async with edge_node(tmp_path) as node, mapper(node.eventbus.internal_port, "$hw/events/#") as m:
        await m.publish(f"{NODE}/membership/get", '{"event_id":"after-restart"}')
        members = json.loads(await m.expect(f"{NODE}/membership/get/result"))
        assert members["devices"][0]["device"] == device
        assert members["devices"][0]["model"] == model


async def test_twin_and_broker_numbers_reach_the_node_metrics(tmp_path: Path) -> None:
    """What the modules record lands in the node's Prometheus page (the metrics module's rendering)."""
    from prometheus_client.parser import text_string_to_metric_families

    from kubeedge.plugins.metrics.exposition import render

    async with edge_node(tmp_path) as node, mapper(node.eventbus.internal_port, "$hw/events/#") as m:
        await add_foo(node, m)
        await m.publish(f"{DEV}/twin/update", '{"event_id":"u","timestamp":0,"twin":{"t":{"actual":{"value":"1"}}}}')
        await m.expect(f"{DEV}/twin/update/result")
        await m.publish(f"{DEV}/state/update", '{"event_id":"s","timestamp":0,"state":"online"}')
        await m.expect(f"{DEV}/state/update/result")

        def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            text = render(node.kernel.ctx).decode()
            return {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
            }

        with trio.fail_after(10):  # the broker's own thread hands its counts over once a second
            while samples().get(("kubeedge_broker_messages_received_total", ()), 0) < 2:  # noqa: ASYNC110
                await trio.sleep(0.1)
        seen = samples()
        assert seen[("kubeedge_twin_updates_total", (("source", "mapper"),))] == 1
        assert seen[("kubeedge_twin_state_updates_total", (("state", "online"),))] == 1
        assert seen[("kubeedge_twin_devices", ())] == 1
        assert seen[("kubeedge_eventbus_routed_total", (("target", "twin"),))] >= 2
        assert seen[("kubeedge_eventbus_published_total", ())] >= 4  # membership, results, document

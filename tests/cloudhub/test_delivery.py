"""Reliable delivery (KubeEdge's design): per-node queues keyed by resource, resend until ACK, ObjectSync
records, nothing older than what the edge acknowledged, offline queues kept, node deletion."""

from __future__ import annotations

from pathlib import Path

import trio
from link_harness import Cloud, ack, next_message, node_credentials, raw_client, run_cloud, until

from kubeedge import Message


async def _connect_collect(
    cloud: Cloud, tmp_path: Path, node: str, count: int, *, acknowledge: bool = True
) -> list[Message]:
    ctx = node_credentials(cloud.ca, node, tmp_path / node)
    got: list[Message] = []
    async with raw_client(cloud, node, ctx) as ws:
        for _ in range(count):
            message = await next_message(ws)
            got.append(message)
            if acknowledge:
                await ws.send_message(ack(message))
        if acknowledge:
            await cloud.wait_acked(count)
    return got


async def test_newer_version_replaces_an_older_one_waiting_for_an_offline_node(tmp_path: Path) -> None:
    async with run_cloud(tmp_path / "cloud") as cloud:
        for version in (3, 4, 9):
            await cloud.feed("edge-1", "default/configmap/a", version)
        await cloud.feed("edge-1", "default/configmap/a", 7)  # older than what waits: dropped
        await cloud.feed("edge-1", "default/configmap/b", 2)
        await until(lambda: len(cloud.hub.queue("edge-1").entries) == 2, lambda: cloud.hub.ack_event)
        got = await _connect_collect(cloud, tmp_path, "edge-1", 2)
        assert sorted((m.resource, m.resource_version) for m in got) == [
            ("default/configmap/a", "9"),
            ("default/configmap/b", "2"),
        ]
        assert all(not m.resource.startswith("node/") for m in got)
        await until(lambda: len(cloud.record_versions("edge-1")) == 2, lambda: cloud.hub.ack_event)
        assert cloud.record_versions("edge-1") == {"default/configmap/a": "9", "default/configmap/b": "2"}


async def test_unacknowledged_message_is_resent_then_left_to_sync(tmp_path: Path) -> None:
    async with run_cloud(tmp_path / "cloud", retryInterval=0.2, maxSends=3) as cloud:
        ctx = node_credentials(cloud.ca, "edge-1", tmp_path / "c")
        async with raw_client(cloud, "edge-1", ctx) as ws:
            await cloud.feed("edge-1", "default/secret/s", 1)
            sends = [await next_message(ws) for _ in range(3)]
            assert len({m.msg_id for m in sends}) == 1
            with trio.move_on_after(1.0) as quiet:
                await ws.get_message()
            assert quiet.cancelled_caught, "no fourth send"
            assert cloud.hub.queue("edge-1").gave_up == 1
            assert not cloud.hub.queue("edge-1").entries
            # a late ACK after the last send is not an error
            await ws.send_message(ack(sends[0]))


async def test_ack_of_a_replaced_message_keeps_the_newer_one_queued(tmp_path: Path) -> None:
    async with run_cloud(tmp_path / "cloud", retryInterval=0.3) as cloud:
        ctx = node_credentials(cloud.ca, "edge-1", tmp_path / "c")
        async with raw_client(cloud, "edge-1", ctx) as ws:
            await cloud.feed("edge-1", "default/configmap/a", 1)
            first = await next_message(ws)
            await cloud.feed("edge-1", "default/configmap/a", 2)
            second = await next_message(ws)
            assert second.resource_version == "2"
            await ws.send_message(ack(first))
            await cloud.wait_acked(1)
            assert "default/configmap/a" in cloud.hub.queue("edge-1").entries
            await ws.send_message(ack(second))
            await cloud.wait_acked(2)
            assert not cloud.hub.queue("edge-1").entries
            metrics = cloud.ctx.metrics  # what the node's Prometheus page shows
            assert metrics.value("kubeedge_hub_sessions") == 1
            latency = next(s for s in metrics.samples() if s.name == "kubeedge_hub_ack_latency_seconds")
            assert latency.count == 2 and 0 < latency.value < 10
        await until(
            lambda: cloud.record_versions("edge-1") == {"default/configmap/a": "2"}, lambda: cloud.hub.ack_event
        )


async def test_disconnect_keeps_unacknowledged_messages_for_the_next_session(tmp_path: Path) -> None:
    async with run_cloud(tmp_path / "cloud") as cloud:
        await cloud.feed("edge-1", "default/configmap/a", 1)
        first = await _connect_collect(cloud, tmp_path, "edge-1", 1, acknowledge=False)
        await until(lambda: "edge-1" not in cloud.hub.sessions, lambda: cloud.hub.session_changed)
        second = await _connect_collect(cloud, tmp_path, "edge-1", 1)
        assert first[0].msg_id == second[0].msg_id and second[0].resource_version == "1"


async def test_restarted_cloud_sends_nothing_older_than_acknowledged(tmp_path: Path) -> None:
    async with run_cloud(tmp_path / "cloud") as cloud:
        await cloud.feed("edge-1", "default/configmap/a", 5)
        await _connect_collect(cloud, tmp_path, "edge-1", 1)
        await cloud.hub.records.flush()
    async with run_cloud(tmp_path / "cloud") as cloud:
        assert cloud.record_versions("edge-1") == {"default/configmap/a": "5"}
        # A controller re-lists after the restart: the same and an older version are not sent again.
        await cloud.feed("edge-1", "default/configmap/a", 5)
        await cloud.feed("edge-1", "default/configmap/a", 4)
        assert not cloud.hub.queue("edge-1").entries
        await cloud.feed("edge-1", "default/configmap/a", 6)
        got = await _connect_collect(cloud, tmp_path, "edge-1", 1)
        assert got[0].resource_version == "6"


async def test_delete_removes_the_record(tmp_path: Path) -> None:
    async with run_cloud(tmp_path / "cloud") as cloud:
        await cloud.feed("edge-1", "default/configmap/a", 5)
        await _connect_collect(cloud, tmp_path, "edge-1", 1)
        await until(lambda: bool(cloud.record_versions("edge-1")), lambda: cloud.hub.ack_event)
        await cloud.feed("edge-1", "default/configmap/a", 6, operation="delete")
        ctx = node_credentials(cloud.ca, "edge-1", tmp_path / "again")
        async with raw_client(cloud, "edge-1", ctx) as ws:
            message = await next_message(ws)
            assert message.operation == "delete"
            await ws.send_message(ack(message))
            await cloud.wait_acked(2)
        assert cloud.record_versions("edge-1") == {}


async def test_deleting_a_node_drops_its_queue_records_and_session(tmp_path: Path) -> None:
    async with run_cloud(tmp_path / "cloud") as cloud:
        await cloud.feed("edge-1", "default/configmap/a", 1)
        await _connect_collect(cloud, tmp_path, "edge-1", 1)
        await cloud.feed("edge-1", "default/configmap/b", 1)
        await cloud.feed("edge-2", "default/configmap/c", 1)
        ctx = node_credentials(cloud.ca, "edge-1", tmp_path / "again")
        async with raw_client(cloud, "edge-1", ctx) as ws:
            await next_message(ws)  # b, not acknowledged
            await cloud.bus.send(
                "cloudhub",
                Message(source="edgecontroller", group="resource", operation="delete", resource="node/edge-1"),
            )
            await until(lambda: "edge-1" not in cloud.hub.queues, lambda: cloud.hub.session_changed)
            await until(lambda: "edge-1" not in cloud.hub.sessions, lambda: cloud.hub.session_changed)
        assert cloud.record_versions("edge-1") == {}
        assert "default/configmap/c" in cloud.hub.queue("edge-2").entries
        await cloud.hub.records.flush()
    async with run_cloud(tmp_path / "cloud") as cloud:
        assert cloud.record_versions("edge-1") == {}


async def test_no_ack_messages_are_sent_once(tmp_path: Path) -> None:
    async with run_cloud(tmp_path / "cloud", retryInterval=0.2) as cloud:
        membership = Message(
            source="devicecontroller",
            group="twin",
            operation="update",
            resource="node/edge-1/membership",
            content={"added_devices": [], "removed_devices": []},
        )
        await cloud.bus.send("cloudhub", membership)
        ctx = node_credentials(cloud.ca, "edge-1", tmp_path / "c")
        async with raw_client(cloud, "edge-1", ctx) as ws:
            got = await next_message(ws)
            assert got.resource == "membership" and got.group == "twin"
            with trio.move_on_after(0.6) as quiet:
                await ws.get_message()
            assert quiet.cancelled_caught


async def test_a_message_without_resourceversion_is_refused(tmp_path: Path, caplog) -> None:
    async with run_cloud(tmp_path / "cloud") as cloud:
        reply = await cloud.bus.send_sync(
            "cloudhub",
            Message(
                source="edgecontroller",
                group="resource",
                operation="update",
                resource="node/e/default/pod/p",
                content={},
            ),
            timeout=5,
        )
        assert reply.operation == "error" and "resourceversion" in reply.content
        reply = await cloud.bus.send_sync(
            "cloudhub",
            Message(source="edgecontroller", group="resource", operation="update", resource="pods/p"),
            timeout=5,
        )
        assert reply.operation == "error" and "node/<node>/" in reply.content


async def test_sync_queries_list_records_and_fed_objects(tmp_path: Path) -> None:
    async with run_cloud(tmp_path / "cloud") as cloud:
        await cloud.feed("edge-1", "default/configmap/a", 5)
        await _connect_collect(cloud, tmp_path, "edge-1", 1)
        await until(lambda: bool(cloud.record_versions("edge-1")), lambda: cloud.hub.ack_event)
        records = await cloud.bus.send_sync(
            "cloudhub", Message(source="synccontroller", operation="query", resource="objectsync")
        )
        assert records.content[0]["name"] == "edge-1.uid-default-configmap-a"
        assert records.content[0]["resource_version"] == "5"
        fed = await cloud.bus.send_sync(
            "cloudhub", Message(source="synccontroller", operation="query", resource="fedobjects")
        )
        assert fed.content == [
            {
                "node": "edge-1",
                "resource": "default/configmap/a",
                "uid": "uid-default-configmap-a",
                "resourceVersion": "5",
                "queued": False,
            }
        ]

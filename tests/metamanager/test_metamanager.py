"""metamanager: the local store, ACK after commit, never older over newer, local answers, restarts."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import trio
from link_harness import Recorder, run_cloud, run_edge, until

from kubeedge import Kernel, Message, Plugins
from kubeedge.plugins.metamanager.manager import MetaManager
from kubeedge.profile import build_profile


def _cloud_write(operation: str, key: str, version: str, value: Any = None) -> Message:
    return Message(
        source="edgecontroller",
        group="resource",
        operation=operation,
        resource=key,
        resource_version=version,
        content=value if value is not None else {"metadata": {"name": key.rsplit("/", 1)[-1]}, "v": version},
    )


async def _edge_alone(tmp_path: Path, nursery: trio.Nursery) -> tuple[Kernel, MetaManager, Recorder, Recorder]:
    meta = MetaManager({})
    websocket, edged = Recorder("websocket"), Recorder("edged")
    profile = build_profile({"role": "edge", "node": {"name": "e"}, "modules": {}}, data_dir=tmp_path)
    kernel = Kernel(profile, Plugins(), [meta, websocket, edged])
    await nursery.start(partial(kernel.run, handle_signals=False))
    return kernel, meta, websocket, edged


async def test_writes_are_acknowledged_after_commit_and_forwarded(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        kernel, _meta, websocket, edged = await _edge_alone(tmp_path, nursery)
        insert = _cloud_write("insert", "default/pod/p1", "3")
        await kernel.bus.send("metamanager", insert)
        acked = await websocket.wait_for(lambda m: m.operation == "response")
        assert (acked.parent_msg_id, acked.content, acked.resource, acked.group, acked.source) == (
            insert.msg_id,
            "OK",
            "default/pod/p1",
            "resource",
            "metamanager",
        )
        # the row is committed by the time the ACK exists
        reply = await kernel.bus.send_sync(
            "metamanager", Message(source="edged", group="meta", operation="query", resource="default/pod/p1")
        )
        assert reply.content["v"] == "3"
        forwarded = await edged.wait_for(lambda m: m.resource == "default/pod/p1")
        assert forwarded.msg_id == insert.msg_id
        kernel.stop()


async def test_older_version_never_replaces_newer_and_deletes_leave_tombstones(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        kernel, _meta, websocket, _ = await _edge_alone(tmp_path, nursery)
        key = "default/configmap/c"
        for message in (
            _cloud_write("insert", key, "5"),
            _cloud_write("update", key, "4"),  # older: acknowledged, not written
            _cloud_write("update", key, "12"),
            _cloud_write("update", key, "9"),
        ):
            await kernel.bus.send("metamanager", message)
        await until(
            lambda: len([m for m in websocket.messages if m.operation == "response"]) == 4, lambda: websocket.changed
        )
        query = Message(source="edged", group="meta", operation="query", resource=key)
        assert (await kernel.bus.send_sync("metamanager", query)).content["v"] == "12"
        await kernel.bus.send("metamanager", _cloud_write("delete", key, "13"))
        await kernel.bus.send("metamanager", _cloud_write("insert", key, "11"))  # late and older than the delete
        await until(
            lambda: len([m for m in websocket.messages if m.operation == "response"]) == 6, lambda: websocket.changed
        )
        query = Message(source="edged", group="meta", operation="query", resource=key)
        assert (await kernel.bus.send_sync("metamanager", query)).content is None
        await kernel.bus.send("metamanager", _cloud_write("insert", key, "14"))
        await until(
            lambda: len([m for m in websocket.messages if m.operation == "response"]) == 7, lambda: websocket.changed
        )
        query = Message(source="edged", group="meta", operation="query", resource=key)
        assert (await kernel.bus.send_sync("metamanager", query)).content["v"] == "14"
        kernel.stop()


async def test_list_queries_and_edge_reports(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        kernel, _meta, websocket, _ = await _edge_alone(tmp_path, nursery)
        for name in ("b", "a"):
            await kernel.bus.send("metamanager", _cloud_write("insert", f"default/pod/{name}", "1"))
        await kernel.bus.send("metamanager", _cloud_write("insert", "other/pod/z", "1"))
        listing = await kernel.bus.send_sync(
            "metamanager", Message(source="edged", group="meta", operation="query", resource="default/pod")
        )
        assert [p["metadata"]["name"] for p in listing.content] == ["a", "b"]
        report = Message(
            source="edged",
            group="meta",
            operation="update",
            resource="default/podstatus/a",
            content={"phase": "Running"},
        )
        await kernel.bus.send("metamanager", report)
        up = await websocket.wait_for(lambda m: m.resource == "default/podstatus/a")
        assert up.operation == "update" and up.group == "resource" and up.content == {"phase": "Running"}
        status = await kernel.bus.send_sync(
            "metamanager", Message(source="edged", group="meta", operation="query", resource="default/podstatus/a")
        )
        assert status.content == {"phase": "Running"}
        # nonsense is ignored, the module keeps serving
        await kernel.bus.send("metamanager", Message(source="x", group="meta", operation="frobnicate", resource="?"))
        again = await kernel.bus.send_sync(
            "metamanager", Message(source="edged", group="meta", operation="query", resource="default/pod/a")
        )
        assert again.content["metadata"]["name"] == "a"
        kernel.stop()


async def test_edge_restarted_while_the_cloud_is_away_answers_from_its_store(tmp_path: Path) -> None:
    async with run_cloud(tmp_path / "cloud") as cloud:
        server, http_server = cloud.server, cloud.http_server
        async with run_edge(tmp_path / "edge", "edge-1", cloud) as edge:
            await edge.wait_connected()
            await cloud.feed("edge-1", "default/configmap/settings", 8)
            await cloud.feed("edge-1", "default/pod/web", 9)
            await cloud.wait_acked(2)
    # the cloud is gone; the edge restarts from its data directory
    async with run_edge(tmp_path / "edge", "edge-1", server=server, http_server=http_server) as edge:
        assert not edge.hub.connected.is_set()
        reply = await edge.bus.send_sync(
            "metamanager",
            Message(source="edged", group="meta", operation="query", resource="default/configmap/settings"),
        )
        assert reply.content["data"] == {"v": "8"}
        pods = await edge.bus.send_sync(
            "metamanager", Message(source="edged", group="meta", operation="query", resource="default/pod")
        )
        assert [p["metadata"]["name"] for p in pods.content] == ["web"]


async def test_pod_statuses_are_uploaded_again_every_meta_sync_interval(tmp_path: Path) -> None:
    meta = MetaManager({"metaSyncInterval": 0.2})
    websocket = Recorder("websocket")
    profile = build_profile({"role": "edge", "node": {"name": "e"}, "modules": {}}, data_dir=tmp_path)
    kernel = Kernel(profile, Plugins(), [meta, websocket])
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(kernel.run, handle_signals=False))
        report = Message(
            source="edged",
            group="meta",
            operation="update",
            resource="default/podstatus/a",
            content={"phase": "Running"},
        )
        await kernel.bus.send("metamanager", report)
        connected = Message(
            source="websocket", group="meta", operation="connect", resource="node/connection", content="cloud_connected"
        )
        await kernel.bus.send("metamanager", connected)
        await until(
            lambda: sum(m.resource == "default/podstatus/a" for m in websocket.messages) >= 3, lambda: websocket.changed
        )
        assert all(m.content == {"phase": "Running"} for m in websocket.messages if m.resource == "default/podstatus/a")
        kernel.stop()

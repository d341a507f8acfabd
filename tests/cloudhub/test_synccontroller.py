"""synccontroller against a real cloudhub: resends what cloudhub gave up on, updates newer objects,
deletes vanished ones (with a complete source), and never deletes from a partial one."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import trio
from link_harness import Cloud, ack, next_message, node_credentials, raw_client

from kubeedge import Context, Kernel, Plugins
from kubeedge.plugins.cloudhub.hub import CloudHub
from kubeedge.plugins.synccontroller.controller import SourceObject, SyncController
from kubeedge.profile import build_profile


class DictSource:
    complete = True

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], SourceObject] = {}

    async def objects(self, ctx: Context) -> dict[tuple[str, str], SourceObject]:
        return dict(self.items)


async def _cloud(tmp_path: Path, nursery: trio.Nursery, sync: SyncController, **config: Any) -> tuple[Kernel, CloudHub]:
    hub = CloudHub({"address": "127.0.0.1", "port": 0, "httpsPort": 0, **config})
    profile = build_profile({"role": "cloud", "modules": {}}, data_dir=tmp_path)
    kernel = Kernel(profile, Plugins(), [hub, sync])
    await nursery.start(partial(kernel.run, handle_signals=False))
    return kernel, hub


async def test_gives_up_keys_are_resent_by_the_sync_controller(tmp_path: Path) -> None:
    sync = SyncController({"interval": 0.3})
    async with trio.open_nursery() as nursery:
        kernel, hub = await _cloud(tmp_path, nursery, sync, retryInterval=0.2, maxSends=1)
        cloud = Cloud(kernel, {}, hub)
        ctx = node_credentials(hub.ca, "edge-1", tmp_path / "c")
        async with raw_client(cloud, "edge-1", ctx) as ws:
            await cloud.feed("edge-1", "default/configmap/a", 4)
            first = await next_message(ws)  # not acknowledged: cloudhub gives up after one send
            with trio.fail_after(5):
                while hub.queue("edge-1").gave_up < 1:
                    await sync.passed.wait()
            again = await next_message(ws)
            assert again.resource == "default/configmap/a" and again.resource_version == "4"
            assert again.msg_id != first.msg_id
            await ws.send_message(ack(again))
            await cloud.wait_acked(1)
            # acknowledged and unchanged: the next passes send nothing
            with trio.fail_after(5):
                for _ in range(2):
                    await sync.passed.wait()
            assert sync.last.resends == 0 and sync.last.updates == 0 and sync.last.deletes == 0
        kernel.stop()


async def test_complete_source_drives_updates_and_deletes(tmp_path: Path) -> None:
    source = DictSource()
    sync = SyncController({"interval": 0.3}, source=source)
    async with trio.open_nursery() as nursery:
        kernel, hub = await _cloud(tmp_path, nursery, sync)
        cloud = Cloud(kernel, {}, hub)
        ctx = node_credentials(hub.ca, "edge-1", tmp_path / "c")
        async with raw_client(cloud, "edge-1", ctx) as ws:
            key = "default/configmap/a"
            obj = {
                "kind": "ConfigMap",
                "metadata": {"name": "a", "namespace": "default", "uid": "uid-default-configmap-a"},
            }
            source.items[("edge-1", key)] = SourceObject("uid-default-configmap-a", "4", obj)
            await cloud.feed("edge-1", key, 4, content=obj)
            first = await next_message(ws)
            await ws.send_message(ack(first))
            await cloud.wait_acked(1)
            # the object changed in the source without a controller telling cloudhub: sync sends the update
            source.items[("edge-1", key)] = SourceObject("uid-default-configmap-a", "9", obj | {"data": {"x": "1"}})
            update = await next_message(ws)
            assert (update.operation, update.resource_version, update.source) == ("update", "9", "synccontroller")
            await ws.send_message(ack(update))
            await cloud.wait_acked(2)
            # the object vanished from the source: sync sends a delete, the ACK removes the record
            del source.items[("edge-1", key)]
            delete = await next_message(ws)
            assert delete.operation == "delete" and delete.resource == key
            await ws.send_message(ack(delete))
            await cloud.wait_acked(3)
            assert hub.records.list("edge-1") == []
        kernel.stop()


async def test_partial_source_never_deletes(tmp_path: Path) -> None:
    sync = SyncController({"interval": 0.2})
    async with trio.open_nursery() as nursery:
        kernel, hub = await _cloud(tmp_path / "one", nursery, sync)
        cloud = Cloud(kernel, {}, hub)
        ctx = node_credentials(hub.ca, "edge-1", tmp_path / "c")
        async with raw_client(cloud, "edge-1", ctx) as ws:
            await cloud.feed("edge-1", "default/configmap/a", 4)
            await ws.send_message(ack(await next_message(ws)))
            await cloud.wait_acked(1)
            hub.fed.clear()  # as after a cloud restart, before controllers re-list
            with trio.fail_after(5):
                for _ in range(3):
                    await sync.passed.wait()
            assert sync.last.deletes == 0
            with trio.move_on_after(0.3) as quiet:
                await ws.get_message()
            assert quiet.cancelled_caught
        kernel.stop()

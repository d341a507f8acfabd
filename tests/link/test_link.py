"""Cloud and edge kernels in one process, linked by real mutual-TLS websockets on loopback."""

from __future__ import annotations

from pathlib import Path

import trio
from link_harness import run_cloud, run_edge, until


async def test_edge_bootstraps_connects_and_stores_what_the_cloud_sends(tmp_path: Path) -> None:
    async with run_cloud(tmp_path / "cloud") as cloud, run_edge(tmp_path / "edge", "edge-1", cloud) as edge:
        await edge.wait_connected()
        assert (tmp_path / "edge" / "pki" / "edge.crt").exists()
        connected = await cloud.recorders["edgecontroller"].wait_for(lambda m: m.operation == "connected")
        assert connected.resource == "node/edge-1"
        await cloud.feed("edge-1", "default/configmap/cm1", 5)
        await cloud.wait_acked(1)
        stored = await edge.stored()
        assert stored["default/configmap/cm1"][0] == "5"
        assert stored["default/configmap/cm1"][1]["data"] == {"v": "5"}
        await until(
            lambda: cloud.record_versions("edge-1") == {"default/configmap/cm1": "5"}, lambda: cloud.hub.ack_event
        )
        record = cloud.hub.records.list("edge-1")[0]
        assert record.name == "edge-1.uid-default-configmap-cm1" and record.record_kind == "ObjectSync"
        # the forward to edged happens for pods
        await cloud.feed("edge-1", "default/pod/p1", 7)
        forwarded = await edge.recorders["edged"].wait_for(lambda m: m.resource == "default/pod/p1")
        assert forwarded.operation == "update" and forwarded.resource_version == "7"
        with trio.fail_after(5):
            await cloud.wait_acked(2)

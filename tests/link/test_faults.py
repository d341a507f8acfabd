"""Faults during a burst: the link cut, stalled or half-open through a proxy; processes killed with -9.
Afterwards the edge holds exactly the newest version of every object, nothing older over newer, and
no object reaches edged twice in the same version."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import trio
from link_harness import Cloud, Edge, run_cloud, run_edge
from link_proxy import run_proxy

OBJECTS = 15
ROUNDS = 8


def _key(i: int) -> str:
    return f"default/pod/p{i}"


async def _burst(cloud: Cloud, node: str, rounds: range, fault: object = None) -> dict[str, str]:
    newest: dict[str, str] = {}
    for r in rounds:
        for i in range(OBJECTS):
            version = str(r * 100 + i)
            await cloud.feed(node, _key(i), version)
            newest[_key(i)] = version
        if callable(fault):
            await fault(r)
        await trio.sleep(0.02)  # spread the burst so faults land mid-stream
    return newest


async def _settled(cloud: Cloud, edge: Edge, node: str, newest: dict[str, str], timeout: float = 30) -> None:  # noqa: ASYNC109
    async def edge_state() -> dict[str, str]:
        return {key: rv for key, (rv, _) in (await edge.stored()).items()}

    with trio.fail_after(timeout):
        while True:
            if await edge_state() == newest and not cloud.hub.queue(node).entries:
                break
            with trio.move_on_after(0.2):
                await edge.meta.committed.wait()
    stored = await edge.stored()
    for key, (rv, obj) in stored.items():
        assert obj["metadata"]["resourceVersion"] == rv == newest[key]


def _no_duplicates(edge: Edge) -> None:
    seen = Counter(
        (m.resource, m.resource_version) for m in edge.recorders["edged"].messages if m.resource != "node/connection"
    )
    repeated = {k: n for k, n in seen.items() if n > 1}
    assert not repeated, f"edged got these twice: {repeated}"


async def test_cut_stall_and_half_open_during_a_burst(tmp_path: Path) -> None:
    async with run_cloud(tmp_path / "cloud", keepaliveInterval=1.5, retryInterval=0.4, maxSends=50) as cloud:
        async with run_proxy(cloud.hub.port) as proxy:
            async with run_edge(tmp_path / "edge", "edge-1", cloud, server=proxy.address, heartbeat=0.3) as edge:
                await edge.wait_connected()

                async def fault(r: int) -> None:
                    if r == 1:
                        proxy.cut()
                    elif r == 3:
                        proxy.stall()
                        await trio.sleep(1.0)
                        proxy.resume()
                    elif r == 5:
                        proxy.half_open()

                newest = await _burst(cloud, "edge-1", range(ROUNDS), fault)
                await _settled(cloud, edge, "edge-1", newest)
                _no_duplicates(edge)
                assert edge.hub.connections >= 3  # it reconnected after each fault
                assert proxy.connections >= 3


async def test_offline_edge_gets_everything_on_reconnect(tmp_path: Path) -> None:
    async with run_cloud(tmp_path / "cloud") as cloud:
        async with run_edge(tmp_path / "edge", "edge-1", cloud) as edge:
            await edge.wait_connected()
            newest = await _burst(cloud, "edge-1", range(2))
            await _settled(cloud, edge, "edge-1", newest)
        # the edge is away; the cloud keeps feeding
        newest = await _burst(cloud, "edge-1", range(2, 5))
        assert len(cloud.hub.queue("edge-1").entries) == OBJECTS
        async with run_edge(tmp_path / "edge", "edge-1", cloud) as edge:
            await _settled(cloud, edge, "edge-1", newest)
            _no_duplicates(edge)

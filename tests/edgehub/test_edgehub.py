"""edgehub against a real cloudhub: bootstrap, routing by group, link notifications, uploads, reconnects."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio
from link_harness import run_cloud, run_edge, until

from kubeedge import Kernel, Message, Plugins
from kubeedge.kernel import ModuleFailed
from kubeedge.plugins.common import pki
from kubeedge.plugins.edgehub.hub import EdgeHub
from kubeedge.profile import build_profile

EDGE_MODULES = ("edged", "twin", "eventbus", "servicebus")


async def test_cloud_messages_are_routed_by_group_and_source(tmp_path: Path) -> None:
    async with (
        run_cloud(tmp_path / "cloud") as cloud,
        run_edge(tmp_path / "edge", "edge-1", cloud, recorders=EDGE_MODULES) as edge,
    ):
        await edge.wait_connected()
        sends = [
            Message(
                source="devicecontroller",
                group="twin",
                operation="update",
                resource="node/edge-1/membership",
                content={},
            ),
            Message(
                source="router", group="user", operation="publish", resource="node/edge-1/default/topic", content="hi"
            ),
            Message(
                source="router_servicebus",
                group="user",
                operation="request",
                resource="node/edge-1/default/svc",
                content={},
            ),
        ]
        for message in sends:
            await cloud.bus.send("cloudhub", message)
        twin = await edge.recorders["twin"].wait_for(lambda m: m.resource == "membership")
        assert twin.source == "devicecontroller"
        user = await edge.recorders["eventbus"].wait_for(lambda m: m.operation == "publish")
        assert user.resource == "default/topic" and user.content == "hi"
        bus = await edge.recorders["servicebus"].wait_for(lambda m: m.operation == "request")
        assert bus.resource == "default/svc"


async def test_link_changes_are_announced_and_uploads_reach_the_right_controller(tmp_path: Path) -> None:
    async with run_cloud(tmp_path / "cloud", recorders=("edgecontroller", "devicecontroller")) as cloud:
        async with run_edge(tmp_path / "edge", "edge-1", cloud, recorders=EDGE_MODULES) as edge:
            await edge.wait_connected()
            for name in EDGE_MODULES:
                note = await edge.recorders[name].wait_for(lambda m: m.resource == "node/connection")
                assert (note.source, note.group, note.operation, note.content) == (
                    "websocket",
                    "meta",
                    "connect",
                    "cloud_connected",
                )
            await edge.bus.send(
                "websocket",
                Message(
                    source="twin",
                    group="twin",
                    operation="update",
                    resource="device/default/d1/twin/edge_updated",
                    content={"twin": {}},
                ),
            )
            await edge.bus.send(
                "websocket",
                Message(
                    source="edged",
                    group="meta",
                    operation="update",
                    resource="default/podstatus/p1",
                    content={"phase": "Running"},
                ),
            )
            twin = await cloud.recorders["devicecontroller"].wait_for(lambda m: "edge_updated" in m.resource)
            assert twin.resource == "node/edge-1/device/default/d1/twin/edge_updated"
            status = await cloud.recorders["edgecontroller"].wait_for(lambda m: "podstatus" in m.resource)
            assert status.resource == "node/edge-1/default/podstatus/p1"
        # the cloud goes away while the edge runs: modules hear about it
    async with run_cloud(tmp_path / "cloud2") as other:
        async with run_edge(tmp_path / "edge2", "edge-2", other, recorders=EDGE_MODULES) as edge:
            await edge.wait_connected()
            other.kernel.stop()
            note = await edge.recorders["twin"].wait_for(lambda m: m.content == "cloud_disconnected")
            assert note.resource == "node/connection"


async def test_reconnects_fast_after_a_cloud_restart_and_delivers_offline_uploads(tmp_path: Path) -> None:
    async with run_cloud(tmp_path / "cloud") as cloud:
        port, https_port = cloud.hub.port, cloud.hub.https_port
        server, http_server = cloud.server, cloud.http_server
        token = cloud.token()
    async with run_edge(tmp_path / "edge", "edge-1", token=token, server=server, http_server=http_server) as edge:
        # no cloud yet: the edge runs (autonomy) and keeps its uploads
        with pytest.raises(trio.TooSlowError):
            await edge.wait_connected(timeout=0.5)
        await edge.bus.send(
            "websocket",
            Message(
                source="edged", group="meta", operation="update", resource="default/nodestatus/edge-1", content={"n": 1}
            ),
        )
        async with run_cloud(tmp_path / "cloud", port=port, httpsPort=https_port) as cloud:
            await edge.wait_connected(timeout=10)
            up = await cloud.recorders["edgecontroller"].wait_for(lambda m: "nodestatus" in m.resource)
            assert up.content == {"n": 1}
        began = trio.current_time()
        async with run_cloud(tmp_path / "cloud", port=port, httpsPort=https_port) as cloud:
            await until(lambda: "edge-1" in cloud.hub.sessions, lambda: cloud.hub.session_changed, timeout=5)
            assert trio.current_time() - began < 5
            await cloud.feed("edge-1", "default/configmap/x", 3)
            await cloud.wait_acked(1)
        assert edge.hub.connections >= 2


async def test_heartbeats_keep_the_session_beyond_keepalive_interval(tmp_path: Path) -> None:
    async with (
        run_cloud(tmp_path / "cloud", keepaliveInterval=1.5) as cloud,
        run_edge(tmp_path / "edge", "edge-1", cloud, heartbeat=0.2) as edge,
    ):
        await edge.wait_connected()
        await until(lambda: "edge-1" in cloud.hub.sessions, lambda: cloud.hub.session_changed)
        session = cloud.hub.sessions["edge-1"]
        await trio.sleep(3.0)  # longer than keepaliveInterval: only heartbeats keep it
        assert cloud.hub.sessions.get("edge-1") is session
        assert edge.hub.connections == 1


async def test_a_wrong_token_is_logged_with_its_step_and_nothing_connects(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with run_cloud(tmp_path / "cloud") as cloud:
        wrong = pki.make_token(pki.CA.create())
        async with run_edge(tmp_path / "edge", "edge-1", cloud, token=wrong) as edge:
            await until(lambda: "hash mismatch" in caplog.text, lambda: cloud.hub.session_changed, 5)
            assert not edge.hub.connected.is_set()
            assert not (tmp_path / "edge" / "pki" / "edge.crt").exists()
        assert "certificate bootstrap failed at step 'check the CA'" in caplog.text
        assert not cloud.hub.sessions


async def test_no_certificate_and_no_token_stops_start_up_clearly(tmp_path: Path) -> None:
    profile = build_profile({"role": "edge", "node": {"name": "edge-1"}, "modules": {}}, data_dir=tmp_path)
    kernel = Kernel(profile, Plugins(), [EdgeHub({"server": "127.0.0.1:1"})])
    with pytest.raises(ModuleFailed, match="no token in the profile"):
        await kernel.run(handle_signals=False)


async def test_expired_certificate_is_replaced_with_the_token(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with run_cloud(tmp_path / "cloud", edgeCertValidityDays=1.5 / 86400) as cloud:
        async with run_edge(tmp_path / "edge", "edge-1", cloud, rotationFraction=[0.98, 0.99]) as edge:
            await edge.wait_connected()
        first = pki.cert_from_bytes((tmp_path / "edge" / "pki" / "edge.crt").read_bytes())
        await trio.sleep(max(0.0, first.not_valid_after_utc.timestamp() - time.time()) + 0.2)  # let it expire
        async with run_edge(tmp_path / "edge", "edge-1", cloud, token=cloud.token()) as edge:
            await edge.wait_connected()
        assert "the certificate expired; getting a new one" in caplog.text
        again = pki.cert_from_bytes((tmp_path / "edge" / "pki" / "edge.crt").read_bytes())
        assert again.serial_number != first.serial_number


async def test_cloud_keeps_a_current_token_for_gettoken(tmp_path: Path) -> None:
    from kubeedge.plugins.cloudhub.keadm import main

    async with run_cloud(tmp_path / "cloud") as cloud:
        stored = (tmp_path / "cloud" / "pki" / "token").read_text()
        assert pki.verify_token(cloud.ca, stored)
    code = await trio.to_thread.run_sync(main, ["gettoken", "--data-dir", str(tmp_path / "cloud")])
    assert code == 0

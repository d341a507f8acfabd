"""cloudhub's websocket sessions: identity from the client certificate, one session per node, limits,
keepalive, bad frames; every refusal leaves the other nodes served."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from link_harness import Cloud, ack, client_context, next_message, node_credentials, raw_client, run_cloud, until
from trio_websocket import CloseReason, ConnectionClosed, ConnectionRejected, HandshakeError

from kubeedge import Message
from kubeedge.plugins.common import pki


@pytest.fixture
async def cloud(tmp_path: Path):
    async with run_cloud(
        tmp_path / "cloud", nodeLimit=3, keepaliveInterval=30, maxMessageSize=64 * 1024, handshakeTimeout=2
    ) as c:
        yield c


async def _served(cloud: Cloud, node: str, ws: object, version: int) -> None:
    """Prove ``node``'s session works: a message fed for it arrives and its ACK is counted."""
    before = cloud.hub.acked
    await cloud.feed(node, f"default/configmap/probe-{version}", version)
    message = await next_message(ws)
    assert message.resource == f"default/configmap/probe-{version}"
    await ws.send_message(ack(message))  # type: ignore[attr-defined]
    await cloud.wait_acked(before + 1)


async def test_a_node_with_its_certificate_is_served(cloud: Cloud, tmp_path: Path) -> None:
    ctx = node_credentials(cloud.ca, "edge-1", tmp_path / "c1")
    async with raw_client(cloud, "edge-1", ctx) as ws:
        await until(lambda: "edge-1" in cloud.hub.sessions, lambda: cloud.hub.session_changed)
        await _served(cloud, "edge-1", ws, 1)


async def test_certificate_for_another_node_is_refused(
    cloud: Cloud, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = node_credentials(cloud.ca, "edge-1", tmp_path / "c1")
    impostor = node_credentials(cloud.ca, "edge-2", tmp_path / "c2", cn_node="edge-1")
    async with raw_client(cloud, "edge-1", good) as ws:
        with pytest.raises(ConnectionRejected) as info:
            async with raw_client(cloud, "edge-2", impostor):
                pass
        assert info.value.status_code == 403
        assert b"node identity mismatch" in (info.value.body or b"")
        await _served(cloud, "edge-1", ws, 2)
    assert "identity mismatch" in caplog.text


async def test_node_id_header_must_match_the_path(cloud: Cloud, tmp_path: Path) -> None:
    ctx = node_credentials(cloud.ca, "edge-1", tmp_path / "c1")
    with pytest.raises(ConnectionRejected) as info:
        async with raw_client(cloud, "edge-1", ctx, headers=[(b"node_id", b"edge-7")]):
            pass
    assert info.value.status_code == 400


async def test_wrong_path_is_refused(cloud: Cloud, tmp_path: Path) -> None:
    ctx = node_credentials(cloud.ca, "edge-1", tmp_path / "c1")
    with pytest.raises(ConnectionRejected) as info:
        async with raw_client(cloud, "edge-1", ctx, path="/x"):
            pass
    assert info.value.status_code == 404


async def test_certificate_from_another_ca_is_refused(
    cloud: Cloud, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = node_credentials(cloud.ca, "edge-1", tmp_path / "c1")
    other_ca = pki.CA.create()
    stranger = node_credentials(other_ca, "edge-2", tmp_path / "c2")
    stranger.load_verify_locations(cadata=cloud.ca.der)  # it trusts the cloud; the cloud does not trust it
    async with raw_client(cloud, "edge-1", good) as ws:
        with pytest.raises((HandshakeError, ConnectionClosed, trio.BrokenResourceError)):
            async with raw_client(cloud, "edge-2", stranger, connect_timeout=2) as bad:
                await bad.get_message()
        no_cert = client_context(cloud.ca, None, None)
        with pytest.raises((HandshakeError, ConnectionClosed, trio.BrokenResourceError)):
            async with raw_client(cloud, "edge-3", no_cert, connect_timeout=2) as bad:
                await bad.get_message()
        await _served(cloud, "edge-1", ws, 3)
    assert "the client presented no certificate" in caplog.text
    assert caplog.text.count("TLS handshake from") >= 2
    assert "edge-2" not in cloud.hub.sessions


async def test_second_connection_replaces_the_first(cloud: Cloud, tmp_path: Path) -> None:
    ctx = node_credentials(cloud.ca, "edge-1", tmp_path / "c1")
    async with raw_client(cloud, "edge-1", ctx) as first:
        await until(lambda: "edge-1" in cloud.hub.sessions, lambda: cloud.hub.session_changed)
        old = cloud.hub.sessions["edge-1"]
        async with raw_client(cloud, "edge-1", ctx) as second:
            with pytest.raises(ConnectionClosed) as info:
                with trio.fail_after(5):
                    await first.get_message()
            assert _reason(info.value).code == 4000
            assert "replaced" in (_reason(info.value).reason or "")
            await until(lambda: cloud.hub.sessions.get("edge-1") not in (None, old), lambda: cloud.hub.session_changed)
            await _served(cloud, "edge-1", second, 4)


async def test_node_limit(cloud: Cloud, tmp_path: Path) -> None:
    contexts = [node_credentials(cloud.ca, f"edge-{i}", tmp_path / f"c{i}") for i in range(4)]
    async with raw_client(cloud, "edge-0", contexts[0]), raw_client(cloud, "edge-1", contexts[1]):
        async with raw_client(cloud, "edge-2", contexts[2]) as third:
            await until(lambda: len(cloud.hub.sessions) == 3, lambda: cloud.hub.session_changed)
            with pytest.raises(ConnectionRejected) as info:
                async with raw_client(cloud, "edge-3", contexts[3]):
                    pass
            assert info.value.status_code == 429 and b"node limit (3)" in (info.value.body or b"")
            await _served(cloud, "edge-2", third, 5)


async def test_silent_session_is_dropped_after_keepalive_interval(tmp_path: Path) -> None:
    async with run_cloud(tmp_path / "cloud", keepaliveInterval=1.0) as cloud:
        await _silent(cloud, tmp_path)


async def _silent(cloud: Cloud, tmp_path: Path) -> None:
    ctx = node_credentials(cloud.ca, "edge-1", tmp_path / "c1")
    async with raw_client(cloud, "edge-1", ctx) as ws:
        began = trio.current_time()
        with pytest.raises(ConnectionClosed) as info:
            with trio.fail_after(5):
                await ws.get_message()
        assert "no keepalive" in (_reason(info.value).reason or "")
        assert 0.9 <= trio.current_time() - began < 10
    disconnected = await cloud.recorders["edgecontroller"].wait_for(lambda m: m.operation == "disconnected")
    assert disconnected.resource == "node/edge-1"


async def test_keepalives_keep_a_session(tmp_path: Path) -> None:
    async with run_cloud(tmp_path / "cloud", keepaliveInterval=2.0) as cloud:
        await _kept(cloud, tmp_path)


async def _kept(cloud: Cloud, tmp_path: Path) -> None:
    ctx = node_credentials(cloud.ca, "edge-1", tmp_path / "c1")
    keepalive = Message(source="websocket", group="resource", operation="keepalive", resource="node", content="ping")
    async with raw_client(cloud, "edge-1", ctx) as ws:
        for _ in range(10):  # 3 s in all, longer than keepaliveInterval
            await ws.send_message(keepalive.to_json() + "\n")
            await trio.sleep(0.3)  # the edge's heartbeat period under test
        assert "edge-1" in cloud.hub.sessions
        await _served(cloud, "edge-1", ws, 6)


async def test_bad_frames_are_refused_and_the_session_goes_on(
    cloud: Cloud, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = node_credentials(cloud.ca, "edge-1", tmp_path / "c1")
    async with raw_client(cloud, "edge-1", ctx) as ws:
        await ws.send_message("{not json")
        await ws.send_message('{"header": 5}')
        await ws.send_message("[1,2]")
        unknown = Message(source="edged", group="resource", operation="explode", resource="default/pod/x")
        await ws.send_message(unknown.to_json())
        reply = await next_message(ws)
        assert reply.operation == "error" and reply.parent_msg_id == unknown.msg_id
        assert "unknown operation 'explode'" in reply.content
        await _served(cloud, "edge-1", ws, 7)
    assert "malformed frame refused" in caplog.text and "node edge-1" in caplog.text


async def test_oversize_frame_closes_only_that_session(
    cloud: Cloud, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    big = node_credentials(cloud.ca, "edge-1", tmp_path / "c1")
    other = node_credentials(cloud.ca, "edge-2", tmp_path / "c2")
    async with raw_client(cloud, "edge-2", other) as ws2:
        async with raw_client(cloud, "edge-1", big) as ws1:
            await ws1.send_message("x" * (128 * 1024))
            with pytest.raises(ConnectionClosed) as info:
                with trio.fail_after(5):
                    await ws1.get_message()
            assert _reason(info.value).code == 1009
        await _served(cloud, "edge-2", ws2, 8)
    assert "over the size limit" in caplog.text


async def test_upstream_messages_get_the_node_prefix_and_their_controller(cloud: Cloud, tmp_path: Path) -> None:
    ctx = node_credentials(cloud.ca, "edge-1", tmp_path / "c1")
    status = Message(
        source="edged", group="meta", operation="update", resource="default/podstatus/p1", content={"phase": "Running"}
    )
    twin = Message(
        source="twin", group="twin", operation="update", resource="device/default/d1/twin/edge_updated", content={}
    )
    async with raw_client(cloud, "edge-1", ctx) as ws:
        await ws.send_message(status.to_json() + "\n")
        await ws.send_message(twin.to_json())  # devicecontroller is not loaded here: logged and dropped
        got = await cloud.recorders["edgecontroller"].wait_for(lambda m: m.resource.endswith("podstatus/p1"))
        assert got.resource == "node/edge-1/default/podstatus/p1" and got.content == {"phase": "Running"}
        await _served(cloud, "edge-1", ws, 9)


async def test_a_real_tls_client_with_a_foreign_certificate_gets_a_clear_refusal(
    cloud: Cloud, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node_credentials(pki.CA.create(), "edge-2", tmp_path / "c2")
    result = await trio.run_process(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{cloud.hub.port}", "-brief", *_cert_args(tmp_path / "c2")],
        stdin=b"GET / HTTP/1.1\r\n\r\n",
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert b"HTTP/1.1 101" not in result.stdout
    await until(lambda: "is not from this cloud's CA" in caplog.text, lambda: cloud.hub.session_changed, 5)
    assert "edge-2" not in cloud.hub.sessions


def _cert_args(directory: Path) -> list[str]:
    return ["-cert", str(directory / "c.crt"), "-key", str(directory / "c.key")]


def _reason(exc: ConnectionClosed) -> CloseReason:
    assert exc.reason is not None
    return exc.reason

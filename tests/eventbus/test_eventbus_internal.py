"""mqttMode 0: the embedded broker, with paho-mqtt clients as third-party mappers and apps."""

from __future__ import annotations

import json
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import trio

from eventbus.edge_peers import edge_node, mapper
from kubeedge import Message
from kubeedge.plugins.eventbus.broker import BrokerSettings, EmbeddedBroker


async def test_upload_topics_go_to_the_cloud_as_kubeedge_sends_them(tmp_path: Path) -> None:
    async with edge_node(tmp_path, twin=False) as node, mapper(node.eventbus.internal_port) as app:
        await app.publish("$hw/events/upload/foo", '{"a":1}')
        up = await node.cloud.expect(lambda m: m.resource == "$hw/events/upload/foo")
        assert (up.source, up.group, up.operation, up.content) == ("bus", "user", "upload", '{"a":1}')
        await app.publish("default/user/app", b"raw text")
        up = await node.cloud.expect(lambda m: m.resource == "default/user/app")
        assert up.content == "raw text"
        await app.publish("SYS/dis/upload_records", "r")
        assert (await node.cloud.expect(lambda m: m.resource == "SYS/dis/upload_records")).content == "r"


async def test_twin_topics_go_to_the_twin_module(tmp_path: Path) -> None:
    # A stand-in "twin" module records what the eventbus hands it.
    from eventbus.edge_peers import CloudStub

    class TwinRecorder(CloudStub):
        name = "twin"
        group = "twin"

    recorder = TwinRecorder()
    async with edge_node(tmp_path, twin=False, extra=[recorder]) as node, mapper(node.eventbus.internal_port) as m:
        await m.publish("$hw/events/device/default/foo/twin/update", '{"event_id":"1"}')
        got = await recorder.expect(lambda msg: True)
        assert (got.source, got.group, got.operation) == ("eventbus", "twin", "publish")
        assert (got.resource, got.content) == ("$hw/events/device/default/foo/twin/update", '{"event_id":"1"}')
        await m.publish("$hw/events/node/edge-1/membership/get", "{}")
        got = await recorder.expect(lambda msg: True)
        assert got.resource == "$hw/events/node/edge-1/membership/get"


async def test_modules_publish_to_mqtt_clients(tmp_path: Path) -> None:
    async with edge_node(tmp_path, twin=False) as node, mapper(node.eventbus.internal_port, "app/#") as app:
        await node.ctx.send(
            "eventbus",
            Message(source="router_eventbus", group="user", operation="publish", resource="app/a", content="x"),
        )
        assert await app.expect("app/a") == b"x"
        await node.ctx.send(
            "eventbus", Message(source="me", group="bus", operation="publish", resource="app/b", content={"k": [1]})
        )
        assert json.loads(await app.expect("app/b")) == {"k": [1]}


async def test_bad_publish_requests_are_refused_with_an_error_reply(tmp_path: Path) -> None:
    async with edge_node(tmp_path, twin=False) as node:
        reply = await node.ctx.send_sync(
            "eventbus", Message(source="me", group="bus", operation="publish", resource="a/+", content="x"), timeout=5
        )
        assert reply.operation == "error"
        assert "wildcards" in reply.content
        reply = await node.ctx.send_sync(
            "eventbus",
            Message(source="me", group="bus", operation="publish", resource="ok/topic", content="x"),
            timeout=5,
        )
        assert reply.content == "OK"


async def test_rule_topics_subscribed_on_request_and_kept(tmp_path: Path) -> None:
    async with edge_node(tmp_path, twin=False) as node:
        reply = await node.ctx.send_sync(
            "eventbus",
            Message(source="router_eventbus", group="user", operation="subscribe", resource="default/rule-topic"),
            timeout=5,
        )
        assert reply.content == "OK"
        async with mapper(node.eventbus.internal_port) as app:
            await app.publish("default/rule-topic", "hello")
            up = await node.cloud.expect(lambda m: m.resource == "default/rule-topic")
            assert up.content == "hello"
    # The subscription survives a restart of the node.
    async with edge_node(tmp_path, twin=False) as node, mapper(node.eventbus.internal_port) as app:
        assert "default/rule-topic" in node.eventbus.filters
        await app.publish("default/rule-topic", "again")
        assert (await node.cloud.expect(lambda m: m.resource == "default/rule-topic")).content == "again"


async def test_unsubscribed_topics_are_not_forwarded(tmp_path: Path) -> None:
    async with edge_node(tmp_path, twin=False) as node, mapper(node.eventbus.internal_port, "other/#") as app:
        await app.publish("other/topic", "not for the cloud")
        await app.publish("$hw/events/upload/marker", "m")
        await node.cloud.expect(lambda m: m.resource == "$hw/events/upload/marker")
        # The broker still delivers to ordinary subscribers; the eventbus did not take it.
        assert await app.expect("other/topic") == b"not for the cloud"
        assert not node.cloud.taken(lambda m: m.resource == "other/topic")


async def test_password_file_refuses_anonymous_and_wrong_passwords(tmp_path: Path) -> None:
    from pwdlib import PasswordHash
    from pwdlib.hashers.argon2 import Argon2Hasher

    password_file = tmp_path / "passwd"
    password_file.write_text(f"mapper:{PasswordHash((Argon2Hasher(),)).hash('s3cret')}\n")
    config = {"passwordFile": str(password_file)}
    async with edge_node(tmp_path / "node", twin=False, eventbus=config) as node:
        port = node.eventbus.internal_port
        anonymous = await _connect_result(port, None, None)
        wrong = await _connect_result(port, "mapper", "nope")
        assert anonymous.is_failure and wrong.is_failure
        async with mapper(port, username="mapper", password="s3cret") as good:
            assert not good.connect_result.is_failure
            await good.publish("$hw/events/upload/auth", "ok")
            assert (await node.cloud.expect(lambda m: m.resource == "$hw/events/upload/auth")).content == "ok"


async def _connect_result(port: int, username: str | None, password: str | None) -> mqtt.ReasonCode:
    from eventbus.edge_peers import PahoMapper

    peer = PahoMapper(port, username=username, password=password)
    try:
        return await peer.connect()
    finally:
        await peer.close()


def test_anonymous_broker_refused_off_loopback() -> None:
    with pytest.raises(ValueError, match="not loopback"):
        EmbeddedBroker(BrokerSettings(host="0.0.0.0", port=0))
    with pytest.raises(ValueError, match="does not exist"):
        EmbeddedBroker(BrokerSettings(host="0.0.0.0", port=0, password_file="/nonexistent"))


async def test_tls_listener(tmp_path: Path) -> None:
    import datetime
    import ipaddress
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    config = {"mqttServerInternal": "ssl://127.0.0.1:0", "tls": {"certFile": str(cert_file), "keyFile": str(key_file)}}
    async with edge_node(tmp_path / "node", twin=False, eventbus=config) as node:
        from eventbus.edge_peers import PahoMapper

        peer = PahoMapper(node.eventbus.internal_port)
        peer.client.tls_set(ca_certs=str(cert_file), cert_reqs=ssl.CERT_REQUIRED)
        try:
            result = await peer.connect()
            assert not result.is_failure
            await peer.publish("$hw/events/upload/tls", "secure")
            assert (await node.cloud.expect(lambda m: m.resource == "$hw/events/upload/tls")).content == "secure"
        finally:
            await peer.close()


async def test_flood_stays_within_the_backlog_bound(tmp_path: Path) -> None:
    """A publisher floods QoS 0 at a subscriber that does not read: the broker stops reading the publisher
    instead of queueing without limit."""
    config = {"maxBacklog": 200}
    async with edge_node(tmp_path, twin=False, eventbus=config) as node:
        port = node.eventbus.internal_port
        broker = node.eventbus.broker
        stalled = StalledSubscriber(port)
        await trio.to_thread.run_sync(stalled.connect)
        flooder = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
        await trio.to_thread.run_sync(flooder.connect, "127.0.0.1", port)
        flooder.loop_start()
        peak = 0
        try:
            payload = b"x" * 4096
            for _ in range(10):
                for _ in range(500):
                    flooder.publish("flood/topic", payload, qos=0)
                await trio.sleep(0.02)
                peak = max(peak, broker._broker.backlog())
        finally:
            # The stalled reader goes first so the broker's blocked sends fail fast.
            await trio.to_thread.run_sync(stalled.close)
            flooder.loop_stop()
            flooder_socket = flooder.socket()
            if flooder_socket is not None:
                flooder_socket.close()
        assert peak > 0
        # One message's fan-out may pass the bound; nothing piles up beyond it.
        assert peak <= 200 + 8, peak


class StalledSubscriber:
    """Subscribes to the flood and then never reads its socket."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)

    def connect(self) -> None:
        self.client.connect("127.0.0.1", self.port)
        self.client.subscribe("flood/#", qos=0)
        # Run the loop just long enough to send SUBSCRIBE and read SUBACK; then stop reading.
        for _ in range(20):
            self.client.loop(timeout=0.05)

    def close(self) -> None:
        sock = self.client.socket()
        if sock is not None:
            sock.close()


async def test_a_taken_port_stops_the_node_with_a_clear_error(tmp_path: Path) -> None:
    from eventbus.edge_peers import free_port
    from kubeedge import KernelError

    port = free_port()
    config = {"mqttServerInternal": f"tcp://127.0.0.1:{port}"}
    async with edge_node(tmp_path / "a", twin=False, eventbus=config):
        with pytest.raises(BaseExceptionGroup) as caught:
            async with edge_node(tmp_path / "b", twin=False, eventbus=config):
                pass
        assert caught.group_contains(KernelError, match="internal MQTT broker did not start.*address already in use")

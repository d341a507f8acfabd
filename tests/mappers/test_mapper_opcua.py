"""The OPC UA mapper against a real asyncua server (started once per session, in its own thread: its
init takes about a second): node ids and browse paths, writes, subscriptions, Basic256Sha256 + users."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from mapperkit import Edge, actual, device, free_port, model, state_is

from kubeedge.mappers.sdk import parse_device
from kubeedge.mappers.sdk.runtime import Mapper
from kubeedge.registry import Plugins

DEVICE_ID = "default/boiler"
USERS = {"operator": "s3cret"}


class OpcuaServer:
    """An asyncua server on its own asyncio loop in a thread, with a Boiler object."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"opc.tcp://127.0.0.1:{self.port}/kubeedge/"
        self.directory = directory
        self.ready = threading.Event()
        self.nodes: dict[str, Any] = {}
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._thread, daemon=True)

    def _thread(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    def certificates(self) -> None:
        from asyncua.crypto.cert_gen import setup_self_signed_certificate
        from cryptography.x509.oid import ExtendedKeyUsageOID

        uses = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        for who, uri in (("server", "urn:kubeedge:test:server"), ("client", "urn:freeopcua:client")):
            asyncio.run(
                setup_self_signed_certificate(
                    self.directory / f"{who}-key.pem",
                    self.directory / f"{who}.der",
                    uri,
                    "127.0.0.1",
                    uses,
                    {"commonName": f"kubeedge-test-{who}"},
                )
            )

    async def _main(self) -> None:
        from asyncua import Server, ua
        from asyncua.crypto.permission_rules import User, UserRole
        from asyncua.server.user_managers import UserManager

        class Users(UserManager):
            def get_user(
                self, iserver: Any, username: Any = None, password: Any = None, certificate: Any = None
            ) -> Any:
                if username is None:
                    return User(role=UserRole.User)
                return User(role=UserRole.User) if USERS.get(username) == password else None

        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = Server(user_manager=Users())
        await server.init()
        server.set_endpoint(self.url)
        await server.set_application_uri("urn:kubeedge:test:server")
        server.set_security_policy(
            [ua.SecurityPolicyType.NoSecurity, ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
        )
        await server.load_certificate(str(self.directory / "server.der"))
        await server.load_private_key(str(self.directory / "server-key.pem"))
        idx = await server.register_namespace("urn:kubeedge:test")
        boiler = await server.nodes.objects.add_object(idx, "Boiler")
        variables = {
            "Temperature": ua.Variant(20.5, ua.VariantType.Double),
            "Setpoint": ua.Variant(40, ua.VariantType.Int32),
            "Name": ua.Variant("boiler-1", ua.VariantType.String),
            "Running": ua.Variant(True, ua.VariantType.Boolean),
            "Counter": ua.Variant(0, ua.VariantType.UInt32),
        }
        for name, value in variables.items():
            node = await boiler.add_variable(f"ns={idx};s=Boiler.{name}", f"{idx}:{name}", value)
            await node.set_writable()
            self.nodes[name] = node
        self.namespace = idx
        async with server:
            self.ready.set()
            await self._stop.wait()

    def start(self) -> None:
        self.certificates()
        self.thread.start()
        if not self.ready.wait(30) or self.error is not None:
            raise RuntimeError(f"asyncua server did not start: {self.error!r}")

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)

    def _run(self, coro: Any) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def write(self, name: str, value: Any) -> None:
        from asyncua import ua

        node = self.nodes[name]
        self._run(node.write_value(ua.Variant(value, self._run(node.read_data_type_as_variant_type()))))

    def read(self, name: str) -> Any:
        return self._run(self.nodes[name].read_value())

    async def awrite(self, name: str, value: Any) -> None:
        await trio.to_thread.run_sync(self.write, name, value)

    async def aread(self, name: str) -> Any:
        return await trio.to_thread.run_sync(self.read, name)


@pytest.fixture(scope="session")
def opcua_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpcuaServer]:
    server = OpcuaServer(tmp_path_factory.mktemp("opcua"))
    server.start()
    yield server
    server.stop()


MODEL = model(
    "boiler-model",
    [
        {"name": "temperature", "type": "DOUBLE", "accessMode": "ReadWrite"},
        {"name": "setpoint", "type": "INT", "accessMode": "ReadWrite", "minimum": "0", "maximum": "90"},
        {"name": "name", "type": "STRING", "accessMode": "ReadOnly"},
        {"name": "running", "type": "BOOLEAN", "accessMode": "ReadWrite"},
        {"name": "counter", "type": "INT", "accessMode": "ReadOnly"},
    ],
    protocol="opcua",
)


def boiler(server: OpcuaServer, protocol: dict[str, Any] | None = None, **overrides: dict[str, Any]) -> Any:
    ns = server.namespace
    visitors: dict[str, dict[str, Any]] = {
        "temperature": {"nodeID": f"ns={ns};s=Boiler.Temperature"},
        "setpoint": {"nodeID": f"ns={ns};s=Boiler.Setpoint"},
        "name": {"browseName": f"{ns}:Boiler/{ns}:Name"},
        "running": {"browseName": f"{ns}:Boiler/{ns}:Running"},
        "counter": {"nodeID": f"ns={ns};s=Boiler.Counter", "subscribe": True},
        **overrides,
    }
    config = {"url": server.url, "timeout": 2000, "publishingInterval": 20, **(protocol or {})}
    return parse_device(device("boiler", "boiler-model", config, visitors, protocol="opcua", cycle_ms=100), MODEL)


def spec() -> Any:
    return Plugins().mapper_driver("opcua")


async def test_reads_by_node_id_and_browse_path_writes_and_subscriptions(
    opcua_server: OpcuaServer, aio_loop: Any, edge: Edge, mosquitto: str
) -> None:
    await opcua_server.awrite("Temperature", 20.5)
    await opcua_server.awrite("Setpoint", 40)
    await opcua_server.awrite("Running", True)
    await opcua_server.awrite("Counter", 0)
    mapper = Mapper([spec()], broker=mosquitto, node="edge-1", devices=[boiler(opcua_server)])
    delta = f"$hw/events/device/{DEVICE_ID}/twin/update/delta"
    async with trio.open_nursery() as nursery:
        await nursery.start(mapper.run)
        await edge.wait_for(f"$hw/events/device/{DEVICE_ID}/state/update", state_is("online"))
        await edge.wait_for(*actual(DEVICE_ID, "temperature", "20.5"))
        await edge.wait_for(*actual(DEVICE_ID, "name", "boiler-1"))
        await edge.wait_for(*actual(DEVICE_ID, "running", "true"))
        await edge.wait_for(*actual(DEVICE_ID, "setpoint", "40"))
        # push: the subscription delivers each change of the counter
        await edge.wait_for(*actual(DEVICE_ID, "counter", "0"))
        await opcua_server.awrite("Counter", 7)
        await edge.wait_for(*actual(DEVICE_ID, "counter", "7"))
        # desired -> write with the node's own type -> reported
        await edge.publish(delta, {"delta": {"setpoint": "55", "temperature": "19.25", "running": "false"}})
        await edge.wait_for(*actual(DEVICE_ID, "setpoint", "55"))
        await edge.wait_for(*actual(DEVICE_ID, "temperature", "19.25"))
        await edge.wait_for(*actual(DEVICE_ID, "running", "false"))
        assert await opcua_server.aread("Setpoint") == 55
        assert await opcua_server.aread("Running") is False
        await edge.publish(delta, {"delta": {"setpoint": "91"}})
        refusal = await edge.wait_for(f"$hw/events/device/{DEVICE_ID}/twin/update/result")
        assert refusal["reason"] == "property setpoint: 91 is above the maximum 90"
        nursery.cancel_scope.cancel()


async def test_basic256sha256_with_certificates_and_user_password(
    opcua_server: OpcuaServer, aio_loop: Any, edge: Edge, mosquitto: str
) -> None:
    directory = opcua_server.directory
    secure = {
        "securityPolicy": "Basic256Sha256",
        "securityMode": "SignAndEncrypt",
        "certificate": str(directory / "client.der"),
        "privateKey": str(directory / "client-key.pem"),
        "serverCertificate": str(directory / "server.der"),
        "userName": "operator",
        "password": "s3cret",
    }
    await opcua_server.awrite("Temperature", 21.0)
    mapper = Mapper([spec()], broker=mosquitto, node="edge-1", devices=[boiler(opcua_server, secure)])
    async with trio.open_nursery() as nursery:
        await nursery.start(mapper.run)
        await edge.wait_for(*actual(DEVICE_ID, "temperature", "21"))
        nursery.cancel_scope.cancel()
    edge.clear()
    wrong = Mapper(
        [spec()], broker=mosquitto, node="edge-1", devices=[boiler(opcua_server, {**secure, "password": "x"})]
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(wrong.run)
        await edge.wait_for(f"$hw/events/device/{DEVICE_ID}/state/update", state_is("offline"))
        assert wrong.workers[DEVICE_ID].values == {}
        nursery.cancel_scope.cancel()


async def test_unknown_nodes_make_the_device_unhealthy_and_a_missing_server_offline(
    opcua_server: OpcuaServer, aio_loop: Any, edge: Edge, mosquitto: str
) -> None:
    ns = opcua_server.namespace
    bad = boiler(
        opcua_server,
        setpoint={"nodeID": f"ns={ns};s=Boiler.Nope"},
        name={"browseName": f"{ns}:Boiler/{ns}:Missing"},
    )
    await opcua_server.awrite("Running", True)
    mapper = Mapper([spec()], broker=mosquitto, node="edge-1", devices=[bad])
    async with trio.open_nursery() as nursery:
        await nursery.start(mapper.run)
        worker = await mapper.wait_device(DEVICE_ID)
        await edge.wait_for(f"$hw/events/device/{DEVICE_ID}/state/update", state_is("unhealthy"))
        await edge.wait_for(*actual(DEVICE_ID, "running", "true"))
        assert "BadNodeIdUnknown" in worker.errors["setpoint"]
        assert "not found" in worker.errors["name"]
        nursery.cancel_scope.cancel()
    edge.clear()
    gone = boiler(opcua_server, {"url": f"opc.tcp://127.0.0.1:{free_port()}/", "timeout": 500})
    mapper = Mapper([spec()], broker=mosquitto, node="edge-1", devices=[gone])
    async with trio.open_nursery() as nursery:
        await nursery.start(mapper.run)
        await edge.wait_for(f"$hw/events/device/{DEVICE_ID}/state/update", state_is("offline"))
        nursery.cancel_scope.cancel()

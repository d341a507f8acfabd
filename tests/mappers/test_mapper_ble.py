"""The BLE mapper through bleak's real BlueZ backend, against python-dbusmock's bluez5 template on a
private system D-Bus (no Bluetooth hardware): scan by MAC, read with dataConverter, write with dataWrite,
notify as push, and a device that disconnects and comes back."""

from __future__ import annotations

import base64
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from mapperkit import Edge, actual, device, model, state_is

from kubeedge.mappers.ble.convert import Converter, decode_plain, encode_plain
from kubeedge.mappers.sdk import parse_device
from kubeedge.mappers.sdk.runtime import Mapper
from kubeedge.registry import Plugins

ADDRESS = "AA:BB:CC:DD:EE:01"
DEVICE_ID = "default/thermo"
GC = "org.bluez.GattCharacteristic1"
SERVICE = "0000181a-0000-1000-8000-00805f9b34fb"
CHARACTERISTICS = {  # handle: (uuid, initial value, flags)
    "000b": ("00002a6e-0000-1000-8000-00805f9b34fb", [0x34, 0x08], ["read"]),  # temperature, int16 LE 21.00 C
    "000d": ("00002a56-0000-1000-8000-00805f9b34fb", [0x00], ["read", "write"]),  # a switch
    "000f": ("00002a19-0000-1000-8000-00805f9b34fb", [87], ["read", "notify"]),  # battery level
    "0011": ("00002a00-0000-1000-8000-00805f9b34fb", list(b"thermo-1"), ["read"]),  # device name
}


class BlueZMock:
    """python-dbusmock's bluez5 template with one device carrying GATT objects (blocking dbus-python)."""

    def __init__(self) -> None:
        import dbus
        import dbusmock
        from dbusmock.testcase import BusType

        self.dbus = dbus
        self.bus = BusType.SYSTEM.get_connection()
        root = self.bus.get_object("org.bluez", "/")
        self.bluez = dbus.Interface(root, "org.bluez.Mock")
        self.mock = dbus.Interface(root, dbusmock.MOCK_IFACE)
        self.bluez.AddAdapter("hci0", "kubeedge-test")
        self.device_path = str(self.bluez.AddDevice("hci0", ADDRESS, "Thermo"))
        self.paths: dict[str, str] = {}
        self._stop = threading.Event()
        self._build()

    def _object(self, path: str) -> Any:
        import dbusmock

        return self.dbus.Interface(self.bus.get_object("org.bluez", path), dbusmock.MOCK_IFACE)

    def _build(self) -> None:
        dbus = self.dbus
        dev = self.device_path
        device = self._object(dev)
        # the template types these as arrays; bleak needs dictionaries
        device.UpdateProperties(
            "org.bluez.Device1",
            {
                "ManufacturerData": dbus.Dictionary({}, signature="qv"),
                "ServiceData": dbus.Dictionary({}, signature="sv"),
                "AdvertisingData": dbus.Dictionary({}, signature="yv"),
                "AdvertisingFlags": dbus.Array([], signature="y"),
            },
        )
        # the template's Connect only sets Connected; bleak also waits for ServicesResolved
        device.AddMethod(
            "org.bluez.Device1",
            "Connect",
            "",
            "",
            "self.UpdateProperties('org.bluez.Device1', "
            "{'Connected': dbus.Boolean(True), 'ServicesResolved': dbus.Boolean(True)})",
        )
        device.AddMethod(
            "org.bluez.Device1",
            "Disconnect",
            "",
            "",
            "self.UpdateProperties('org.bluez.Device1', "
            "{'ServicesResolved': dbus.Boolean(False), 'Connected': dbus.Boolean(False)})",
        )
        service = f"{dev}/service000a"  # bleak reads handles from the path suffix
        self.mock.AddObject(
            service,
            "org.bluez.GattService1",
            {
                "UUID": SERVICE,
                "Primary": True,
                "Device": dbus.ObjectPath(dev),
                "Includes": dbus.Array([], signature="o"),
            },
            [],
        )
        self.mock.AddMethod("org.kubeedge.Test", "EmitAdded", "s", "", "self.object_manager_emit_added(args[0])")
        helper = dbus.Interface(self.bus.get_object("org.bluez", "/"), "org.kubeedge.Test")
        helper.EmitAdded(service)
        for handle, (uuid, value, flags) in CHARACTERISTICS.items():
            path = f"{service}/char{handle}"
            self.paths[uuid[4:8]] = path
            self.mock.AddObject(
                path,
                GC,
                {
                    "UUID": uuid,
                    "Service": dbus.ObjectPath(service),
                    "Value": dbus.Array([dbus.Byte(b) for b in value], signature="y"),
                    "Flags": dbus.Array(flags, signature="s"),
                    "Notifying": False,
                    "WriteAcquired": False,
                    "NotifyAcquired": False,
                    "MTU": dbus.UInt16(185),
                },
                [
                    ("ReadValue", "a{sv}", "ay", f"ret = self.props['{GC}']['Value']"),
                    (
                        "WriteValue",
                        "aya{sv}",
                        "",
                        f"self.UpdateProperties('{GC}', {{'Value': dbus.Array(args[0], signature='y')}})",
                    ),
                    ("StartNotify", "", "", f"self.UpdateProperties('{GC}', {{'Notifying': dbus.Boolean(True)}})"),
                    ("StopNotify", "", "", f"self.UpdateProperties('{GC}', {{'Notifying': dbus.Boolean(False)}})"),
                ],
            )
            helper.EmitAdded(path)

    def set_value(self, short_uuid: str, value: list[int]) -> None:
        dbus = self.dbus
        self._object(self.paths[short_uuid]).UpdateProperties(
            GC, {"Value": dbus.Array([dbus.Byte(b) for b in value], signature="y")}
        )

    def value(self, short_uuid: str) -> list[int]:
        props = self.bus.get_object("org.bluez", self.paths[short_uuid])
        return [int(b) for b in props.Get(GC, "Value", dbus_interface="org.freedesktop.DBus.Properties")]

    def drop_connection(self) -> None:
        dbus = self.dbus
        self._object(self.device_path).UpdateProperties(
            "org.bluez.Device1", {"ServicesResolved": dbus.Boolean(False), "Connected": dbus.Boolean(False)}
        )

    def advertise(self) -> None:
        """Advertise like a real device does: bleak's scanner reports what changes while it scans."""
        rssi = -40
        while not self._stop.wait(0.1):
            rssi = -40 if rssi != -40 else -41
            try:
                self._object(self.device_path).UpdateProperties("org.bluez.Device1", {"RSSI": self.dbus.Int16(rssi)})
            except self.dbus.DBusException:
                return

    def stop(self) -> None:
        self._stop.set()


@pytest.fixture(scope="module")
def bluez() -> Iterator[BlueZMock]:
    """Module-scoped: the private bus replaces DBUS_SYSTEM_BUS_ADDRESS, which other areas' tests must not see."""
    from dbusmock.testcase import BusType, PrivateDBus, SpawnedMock

    with (
        PrivateDBus(BusType.SYSTEM),
        SpawnedMock.spawn_with_template("bluez5", {}, BusType.SYSTEM, stdout=subprocess.DEVNULL),
    ):
        mock = BlueZMock()
        advertiser = threading.Thread(target=mock.advertise, daemon=True)
        advertiser.start()
        yield mock
        mock.stop()
        advertiser.join(5)


MODEL = model(
    "thermo-model",
    [
        {"name": "temperature", "type": "FLOAT", "accessMode": "ReadOnly"},
        {"name": "switch", "type": "INT", "accessMode": "ReadWrite"},
        {"name": "battery", "type": "INT", "accessMode": "ReadOnly"},
        {"name": "name", "type": "STRING", "accessMode": "ReadOnly"},
    ],
    protocol="ble",
)
VISITORS: dict[str, dict[str, Any]] = {
    # bytes 1..0 backwards: a little-endian int16, then / 100
    "temperature": {
        "characteristicUUID": "2a6e",
        "dataConverter": {
            "startIndex": 1,
            "endIndex": 0,
            "orderOfOperations": [{"operationType": "Divide", "operationValue": 100}],
        },
    },
    "switch": {
        "characteristicUUID": "00002a56-0000-1000-8000-00805f9b34fb",
        "dataWrite": {"1": base64.b64encode(b"\x01").decode(), "0": base64.b64encode(b"\x00").decode()},
    },
    "battery": {"characteristicUUID": "2a19", "notify": True},
    "name": {"characteristicUUID": "2a00"},
}


def thermo() -> Any:
    config = {"macAddress": ADDRESS, "scanTimeout": 3000}
    return parse_device(device("thermo", "thermo-model", config, VISITORS, protocol="ble", cycle_ms=200), MODEL)


def test_data_converter_and_plain_values() -> None:
    converter = Converter.from_config(
        {
            "startIndex": 1,
            "endIndex": 2,
            "shiftRight": 4,
            "orderOfOperations": [
                {"operationType": "Multiply", "operationValue": 2},
                {"operationType": "Subtract", "operationValue": 1},
            ],
        }
    )
    assert converter.read(bytes([0xFF, 0x01, 0x20, 0xFF])) == ((0x0120 >> 4) * 2) - 1
    assert Converter.from_config({"startIndex": 1, "endIndex": 0}).read(bytes([0x34, 0x08])) == 0x0834
    with pytest.raises(IndexError):
        Converter.from_config({"startIndex": 0, "endIndex": 5}).read(b"\x01")
    with pytest.raises(ValueError, match="divides by 0"):
        Converter.from_config({"orderOfOperations": [{"operationType": "Divide", "operationValue": 0}]})
    assert decode_plain(bytes([0x10, 0x01]), "int") == 0x0110 and decode_plain(b"ab\x00", "string") == "ab"
    assert encode_plain(300, "int", 1) == bytes([0x2C, 0x01]) and encode_plain(5, "int", 2) == bytes([5, 0])
    with pytest.raises(ValueError, match="unsigned"):
        encode_plain(-1, "int", 1)


async def test_scan_connect_read_write_notify_and_reconnect(
    bluez: BlueZMock, aio_loop: Any, edge: Edge, mosquitto: str
) -> None:
    await trio.to_thread.run_sync(bluez.set_value, "2a19", [87])
    mapper = Mapper([Plugins().mapper_driver("ble")], broker=mosquitto, node="edge-1", devices=[thermo()])
    state_topic = f"$hw/events/device/{DEVICE_ID}/state/update"
    async with trio.open_nursery() as nursery:
        await nursery.start(mapper.run)
        await edge.wait_for(state_topic, state_is("online"), timeout=20)
        await edge.wait_for(*actual(DEVICE_ID, "temperature", "21"))
        await edge.wait_for(*actual(DEVICE_ID, "name", "thermo-1"))
        await edge.wait_for(*actual(DEVICE_ID, "switch", "0"))
        # notify: a new battery level arrives without a read
        await edge.wait_for(*actual(DEVICE_ID, "battery", "87"))
        await trio.to_thread.run_sync(bluez.set_value, "2a19", [55])
        await edge.wait_for(*actual(DEVICE_ID, "battery", "55"))
        # dataConverter on a changed value
        await trio.to_thread.run_sync(bluez.set_value, "2a6e", [0xC4, 0x09])  # 2500 -> 25
        await edge.wait_for(*actual(DEVICE_ID, "temperature", "25"))
        # desired -> dataWrite bytes -> reported
        await edge.publish(f"$hw/events/device/{DEVICE_ID}/twin/update/delta", {"delta": {"switch": "1"}})
        await edge.wait_for(*actual(DEVICE_ID, "switch", "1"))
        assert await trio.to_thread.run_sync(bluez.value, "2a56") == [1]
        # the device drops the link: offline, then back by itself (scan, connect) without a restart
        edge.clear()
        await trio.to_thread.run_sync(bluez.drop_connection)
        await edge.wait_for(state_topic, state_is("offline"), timeout=20)
        await edge.wait_for(state_topic, state_is("online"), timeout=20)
        await trio.to_thread.run_sync(bluez.set_value, "2a19", [42])
        await edge.wait_for(*actual(DEVICE_ID, "battery", "42"), timeout=20)
        nursery.cancel_scope.cancel()


async def test_discover_lists_advertising_devices(bluez: BlueZMock, aio_loop: Any) -> None:
    from trio_asyncio import aio_as_trio

    from kubeedge.mappers.sdk.runtime import bridge_asyncio

    bridge_asyncio()
    driver = Plugins().mapper_driver("ble").driver
    found = await aio_as_trio(driver.discover)({"scanTimeout": 1000})
    assert {"macAddress": ADDRESS, "name": "Thermo"}.items() <= next(
        d for d in found if d["macAddress"] == ADDRESS
    ).items()

"""The BLE driver (bleak): find the device by MAC, connect, read and write GATT characteristics,
notifications as push, and v1alpha2's dataConverter."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.exc import BleakError

from kubeedge.mappers.sdk import DeviceUnreachable, Driver, Point, PointError

from .convert import Converter, decode_plain, encode_plain

BASE_UUID = "-0000-1000-8000-00805f9b34fb"


def full_uuid(text: str) -> str:
    """``2a19`` or ``00002a19`` -> the full 128-bit UUID; full UUIDs pass through, lower-cased."""
    value = text.strip().lower()
    if len(value) == 4:
        return f"0000{value}{BASE_UUID}"
    if len(value) == 8:
        return f"{value}{BASE_UUID}"
    return value


@dataclass(frozen=True)
class Characteristic:
    uuid: str
    notify: bool
    converter: Converter | None
    data_write: dict[str, bytes]


class BleDriver(Driver):
    protocol = "ble"

    def __init__(self, device: Any) -> None:
        super().__init__(device)
        self.client: BleakClient | None = None
        self.lost = asyncio.Event()
        self.sizes: dict[str, int] = {}
        self.scan_timeout = float(self.config.get("scanTimeout", 5000)) / 1000

    def prepare(self, point: Point) -> Characteristic:
        config = point.config
        converter = Converter.from_config(config["dataConverter"]) if config.get("dataConverter") else None
        data_write = {
            key: base64.b64decode(value, validate=True) for key, value in (config.get("dataWrite") or {}).items()
        }
        return Characteristic(
            full_uuid(config["characteristicUUID"]), bool(config.get("notify")), converter, data_write
        )

    def wants_push(self, point: Point) -> bool:
        return bool(point.prepared and point.prepared.notify)

    async def connect(self) -> None:
        address = self.config["macAddress"]
        found = await BleakScanner.find_device_by_address(address, timeout=self.scan_timeout)
        if found is None:
            raise DeviceUnreachable(f"no BLE device {address} seen within {self.scan_timeout:g} s")
        self.lost = asyncio.Event()
        lost = self.lost
        client = BleakClient(found, disconnected_callback=lambda _client: lost.set())
        self.client = client
        try:
            await client.connect()
        except (BleakError, OSError) as exc:
            raise DeviceUnreachable(f"cannot connect to {address}: {exc}") from None

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                await client.disconnect()
            except (BleakError, OSError):
                pass

    async def health(self) -> bool:
        if self.client is None or not self.client.is_connected:
            raise DeviceUnreachable("the device disconnected")
        return True

    def _decode(self, point: Point, data: bytes) -> Any:
        target: Characteristic = point.prepared
        self.sizes[target.uuid] = len(data)
        if target.converter is not None:
            return target.converter.read(data)
        return decode_plain(data, point.property.type)

    async def read(self, points: Sequence[Point]) -> list[Any]:
        client = self.client
        if client is None or not client.is_connected:
            raise DeviceUnreachable("not connected")
        results: list[Any] = []
        cache: dict[str, bytes] = {}  # points sharing a characteristic cost one read
        for point in points:
            uuid = point.prepared.uuid
            try:
                if uuid not in cache:
                    cache[uuid] = bytes(await client.read_gatt_char(uuid))
                results.append(self._decode(point, cache[uuid]))
            except BleakError as exc:
                if not client.is_connected:
                    raise DeviceUnreachable(str(exc)) from None
                results.append(PointError(str(exc)))
            except (IndexError, ValueError) as exc:
                results.append(PointError(f"cannot convert {cache.get(uuid, b'')!r}: {exc}"))
        return results

    async def write(self, writes: Sequence[tuple[Point, Any]]) -> list[PointError | None]:
        client = self.client
        if client is None or not client.is_connected:
            raise DeviceUnreachable("not connected")
        results: list[PointError | None] = []
        for point, value in writes:
            target: Characteristic = point.prepared
            key = _key(value)
            if target.data_write:
                if key not in target.data_write:
                    results.append(PointError(f"{key!r} is not in dataWrite ({', '.join(target.data_write)})"))
                    continue
                data = target.data_write[key]
            else:
                try:
                    data = encode_plain(value, point.property.type, self.sizes.get(target.uuid))
                except (OverflowError, ValueError) as exc:
                    results.append(PointError(str(exc)))
                    continue
            try:
                await client.write_gatt_char(target.uuid, data, response=True)
                results.append(None)
            except BleakError as exc:
                if not client.is_connected:
                    raise DeviceUnreachable(str(exc)) from None
                results.append(PointError(str(exc)))
        return results

    @classmethod
    async def discover(cls, protocol_config: dict[str, Any]) -> list[dict[str, Any]]:
        """Devices advertising nearby, as ``protocol`` configData candidates (``macAddress``) with name/RSSI."""
        timeout = float(protocol_config.get("scanTimeout", 5000)) / 1000
        found = await BleakScanner.discover(timeout=timeout, return_adv=True)
        return [
            {
                "macAddress": device.address,
                "name": device.name or advertisement.local_name or "",
                "rssi": advertisement.rssi,
            }
            for device, advertisement in found.values()
        ]

    async def subscribe(self, points: Sequence[Point], emit: Any) -> None:
        client = self.client
        if client is None:
            raise DeviceUnreachable("not connected")
        by_uuid: dict[str, list[Point]] = {}
        for point in points:
            by_uuid.setdefault(point.prepared.uuid, []).append(point)

        def handler(uuid: str) -> Any:
            def on_notify(_characteristic: Any, data: bytearray) -> None:
                for point in by_uuid[uuid]:
                    try:
                        emit(point, self._decode(point, bytes(data)))
                    except (IndexError, ValueError) as exc:
                        emit(point, PointError(f"cannot convert {bytes(data)!r}: {exc}"))

            return on_notify

        for uuid in by_uuid:
            await client.start_notify(uuid, handler(uuid))
        # a value that changed between connecting and subscribing was notified to no one (a device notifies
        # on change only): read each once now, so a reconnect never leaves a stale twin behind
        for uuid_points in by_uuid.values():
            for point, value in zip(uuid_points, await self.read(uuid_points), strict=True):
                emit(point, value)
        await self.lost.wait()
        raise DeviceUnreachable("the device disconnected")


def _key(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)

"""The Modbus driver (pymodbus): TCP and RTU; coils, discrete inputs, input and holding registers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from kubeedge.mappers.sdk import DeviceUnreachable, Driver, Point, PointError, coalesce

from . import codec

BIT_AREAS = ("CoilRegister", "DiscreteInputRegister")
WRITABLE = ("CoilRegister", "HoldingRegister")
MAX_REGISTERS = 125
MAX_BITS = 2000
PARITY = {"none": "N", "even": "E", "odd": "O", "N": "N", "E": "E", "O": "O"}
EXCEPTION_CODES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    6: "server device busy",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


@dataclass(frozen=True)
class Address:
    area: str
    start: int
    count: int
    data_type: str
    byte_swap: bool
    word_swap: bool


def _default_type(point: Point, limit: int | None) -> str:
    kind = point.property.type
    if kind == "string":
        return "string"
    if kind == "boolean":
        return "boolean"
    if limit == 4:
        return "float64" if kind in ("float", "double") else "int64"
    if limit == 2:
        return "float32" if kind in ("float", "double") else "int32"
    return "uint16"


class ModbusDriver(Driver):
    protocol = "modbus"

    def __init__(self, device: Any) -> None:
        super().__init__(device)
        self.client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        config = self.config
        self.unit = int(config.get("slaveID", config.get("deviceID", 1)))
        self.max_gap = int(config.get("maxGap", 16))
        self.request_timeout = float(config.get("timeout", 5000)) / 1000

    def prepare(self, point: Point) -> Address:
        config = point.config
        area = config["register"]
        limit = config.get("limit")
        if area in BIT_AREAS:
            if limit not in (None, 1):
                raise ValueError(f"{area} points are one bit: limit must be 1, got {limit}")
            return Address(area, int(config["offset"]), 1, "boolean", False, False)
        data_type = config.get("dataType") or _default_type(point, limit)
        count = codec.register_count(data_type, limit)
        if limit is not None and data_type != "string" and limit != count:
            raise ValueError(f"dataType {data_type} takes {count} register(s), but limit is {limit}")
        return Address(
            area,
            int(config["offset"]),
            count,
            data_type,
            bool(config.get("isSwap", False)),
            bool(config.get("isRegisterSwap", False)),
        )

    async def connect(self) -> None:
        config = self.config
        common: dict[str, Any] = {"timeout": self.request_timeout, "retries": 0, "reconnect_delay": 0}
        client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if config.get("serialPort"):
            client = AsyncModbusSerialClient(
                config["serialPort"],
                baudrate=int(config.get("baudRate", 19200)),
                bytesize=int(config.get("dataBits", 8)),
                parity=PARITY[str(config.get("parity", "none"))],
                stopbits=int(config.get("stopBits", 1)),
                **common,
            )
            where = config["serialPort"]
        else:
            client = AsyncModbusTcpClient(config["ip"], port=int(config.get("port", 502)), **common)
            where = f"{config['ip']}:{config.get('port', 502)}"
        self.client = client
        if not await client.connect():
            raise DeviceUnreachable(f"cannot connect to {where}")

    async def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    async def health(self) -> bool:
        return self.client is not None and self.client.connected

    # -- reading ---------------------------------------------------------------------------------------

    async def _request(self, area: str, start: int, count: int) -> Any:
        client = self.client
        if client is None:
            raise DeviceUnreachable("not connected")
        try:
            if area == "HoldingRegister":
                response = await client.read_holding_registers(start, count=count, device_id=self.unit)
            elif area == "InputRegister":
                response = await client.read_input_registers(start, count=count, device_id=self.unit)
            elif area == "CoilRegister":
                response = await client.read_coils(start, count=count, device_id=self.unit)
            else:
                response = await client.read_discrete_inputs(start, count=count, device_id=self.unit)
        except (ConnectionException, ModbusIOException) as exc:
            raise DeviceUnreachable(str(exc)) from None
        except ModbusException as exc:
            return PointError(str(exc))
        if response.isError():
            code = getattr(response, "exception_code", 0)
            return PointError(f"exception response {code} ({EXCEPTION_CODES.get(code, 'unknown')})")
        return response

    async def read(self, points: Sequence[Point]) -> list[Any]:
        results: dict[int, Any] = {}

        def where(point: Point) -> tuple[str, int, int]:
            address: Address = point.prepared
            return address.area, address.start, address.count

        bits = [p for p in points if p.prepared.area in BIT_AREAS]
        registers = [p for p in points if p.prepared.area not in BIT_AREAS]
        spans = coalesce(bits, where, max_count=MAX_BITS, max_gap=self.max_gap * 16, enabled=self.coalesce)
        spans += coalesce(registers, where, max_count=MAX_REGISTERS, max_gap=self.max_gap, enabled=self.coalesce)
        for span in spans:
            response = await self._request(span.area, span.start, span.count)
            if isinstance(response, PointError) and len(span.items) > 1:
                # A merged read can hit an address the device does not have; ask point by point so only
                # the bad point fails.
                for point in span.items:
                    address = point.prepared
                    single = await self._request(address.area, address.start, address.count)
                    results[id(point)] = (
                        single if isinstance(single, PointError) else self._decode(point, single, address.start)
                    )
                continue
            for point in span.items:
                results[id(point)] = (
                    response if isinstance(response, PointError) else self._decode(point, response, span.start)
                )
        return [results[id(p)] for p in points]

    @staticmethod
    def _decode(point: Point, response: Any, base: int) -> Any:
        address: Address = point.prepared
        index = address.start - base
        if address.area in BIT_AREAS:
            return bool(response.bits[index])
        words = response.registers[index : index + address.count]
        if len(words) < address.count:
            return PointError(f"device returned {len(words)} of {address.count} registers")
        return codec.decode(words, address.data_type, byte_swap=address.byte_swap, word_swap=address.word_swap)

    # -- writing ---------------------------------------------------------------------------------------

    async def write(self, writes: Sequence[tuple[Point, Any]]) -> list[PointError | None]:
        client = self.client
        if client is None:
            raise DeviceUnreachable("not connected")
        results: list[PointError | None] = []
        for point, value in writes:
            address: Address = point.prepared
            if address.area not in WRITABLE:
                results.append(PointError(f"{address.area} is read-only"))
                continue
            try:
                if address.area == "CoilRegister":
                    response = await client.write_coil(address.start, bool(value), device_id=self.unit)
                else:
                    words = codec.encode(
                        value,
                        address.data_type,
                        count=address.count,
                        byte_swap=address.byte_swap,
                        word_swap=address.word_swap,
                    )
                    if len(words) == 1:
                        response = await client.write_register(address.start, words[0], device_id=self.unit)
                    else:
                        response = await client.write_registers(address.start, words, device_id=self.unit)
            except ValueError as exc:
                results.append(PointError(str(exc)))
                continue
            except (ConnectionException, ModbusIOException) as exc:
                raise DeviceUnreachable(str(exc)) from None
            if response.isError():
                code = getattr(response, "exception_code", 0)
                results.append(PointError(f"exception response {code} ({EXCEPTION_CODES.get(code, 'unknown')})"))
            else:
                results.append(None)
        return results

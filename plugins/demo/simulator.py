"""A thermostat on Modbus TCP (pymodbus's server): the device the demo and the journey tests drive.

Register map (device id 1):

| table | address | property | type | unit |
|---|---|---|---|---|
| input register | 0 | temperature | int16, x0.1 | degrees Celsius |
| input register | 1 | humidity | uint16, x0.1 | percent |
| holding register | 10 | setpoint | int16, x0.1 | degrees Celsius (read/write) |
| coil | 0 | power | boolean | heating on/off (read/write) |

While power is on the temperature moves towards the setpoint, otherwise towards the room's 18 degrees,
with a little noise; humidity wanders on its own. A register written by a client stays as written.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import trio

log = logging.getLogger("kubeedge.demo")

COILS, DISCRETE_INPUTS, HOLDING, INPUT = 1, 2, 3, 4  # Modbus function codes of the four tables
TEMPERATURE, HUMIDITY, SETPOINT, POWER = 0, 1, 10, 0
AMBIENT = 18.0


def _signed(raw: int) -> int:
    return raw - 0x10000 if raw >= 0x8000 else raw


class Thermostat:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, seed: int | None = None) -> None:
        self.host = host
        self.port = port
        self.temperature = 21.0
        self.humidity = 45.0
        self._random = random.Random(seed)
        self._server: Any = None

    def device(self) -> Any:
        from pymodbus.simulator import DataType, SimData, SimDevice

        return SimDevice(
            id=1,
            simdata=(
                [SimData(0, count=16, values=True, datatype=DataType.BITS)],
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                [SimData(0, count=32, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, count=32, values=0, datatype=DataType.REGISTERS)],
            ),
        )

    async def run(self, *, interval: float = 0.5, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status.started(port)`` once clients can connect."""
        from pymodbus.server import ModbusTcpServer
        from trio_asyncio import aio_as_trio

        async def start() -> Any:
            server = ModbusTcpServer(self.device(), address=(self.host, self.port))
            await server.serve_forever(background=True)
            return server

        self._server = await aio_as_trio(start)()
        try:
            self.port = self._server.transport.sockets[0].getsockname()[1]
            await self.set_setpoint(21.5)
            await self._publish()
            log.info("thermostat simulator on modbus tcp %s:%d", self.host, self.port)
            task_status.started(self.port)
            while True:
                await trio.sleep(interval)
                await self.step()
        finally:
            with trio.CancelScope(shield=True):
                await aio_as_trio(self._server.shutdown)()

    async def _get(self, table: int, address: int, count: int = 1) -> list[Any]:
        from trio_asyncio import aio_as_trio

        return list(await aio_as_trio(self._server.async_getValues)(1, table, address, count))

    async def _set(self, table: int, address: int, values: list[Any]) -> None:
        from trio_asyncio import aio_as_trio

        await aio_as_trio(self._server.async_setValues)(1, table, address, values)

    async def setpoint(self) -> float:
        return _signed((await self._get(HOLDING, SETPOINT))[0]) / 10

    async def set_setpoint(self, celsius: float) -> None:
        await self._set(HOLDING, SETPOINT, [round(celsius * 10) & 0xFFFF])

    async def power(self) -> bool:
        return bool((await self._get(COILS, POWER))[0])

    async def set_temperature(self, celsius: float) -> None:
        """Force the temperature (tests and the benchmark change the device from outside)."""
        self.temperature = celsius
        await self._publish()

    async def step(self) -> None:
        target = await self.setpoint() if await self.power() else AMBIENT
        self.temperature += (target - self.temperature) * 0.2 + self._random.uniform(-0.05, 0.05)
        self.humidity = min(90.0, max(20.0, self.humidity + self._random.uniform(-0.3, 0.3)))
        await self._publish()

    async def _publish(self) -> None:
        await self._set(INPUT, TEMPERATURE, [round(self.temperature * 10) & 0xFFFF, round(self.humidity * 10)])

"""The demo's thermostat, read and written by pymodbus's own client as a mapper would."""

from __future__ import annotations

from functools import partial

import trio
import trio_asyncio
from trio_asyncio import aio_as_trio

from kubeedge.plugins.demo.simulator import Thermostat


async def test_thermostat_serves_its_register_map_and_follows_the_setpoint() -> None:
    from pymodbus.client import AsyncModbusTcpClient

    async with trio_asyncio.open_loop():
        thermostat = Thermostat(seed=1)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(thermostat.run, interval=0.01))
            client = AsyncModbusTcpClient("127.0.0.1", port=port)
            await aio_as_trio(client.connect)()
            try:
                registers = (await aio_as_trio(client.read_input_registers)(0, count=2, device_id=1)).registers
                assert 150 <= registers[0] <= 300  # 15.0 .. 30.0 degrees, in tenths
                assert 200 <= registers[1] <= 900
                assert (await aio_as_trio(client.read_holding_registers)(10, count=1, device_id=1)).registers == [215]
                assert (await aio_as_trio(client.read_coils)(0, count=1, device_id=1)).bits[0] is True
                await aio_as_trio(client.write_register)(10, 300, device_id=1)  # setpoint 30.0
                assert await thermostat.setpoint() == 30.0
                for _ in range(200):
                    await thermostat.step()
                temperature = (await aio_as_trio(client.read_input_registers)(0, count=1, device_id=1)).registers[0]
                assert 295 <= temperature <= 305  # it has reached the new setpoint
                await aio_as_trio(client.write_coil)(0, False, device_id=1)  # power off: back to the room
                for _ in range(200):
                    await thermostat.step()
                assert abs(thermostat.temperature - 18.0) < 0.5
            finally:
                client.close()
            nursery.cancel_scope.cancel()

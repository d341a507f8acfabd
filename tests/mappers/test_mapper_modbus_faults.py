"""Modbus faults: unreachable, timeouts, exception responses, a device that goes and comes back; and RTU."""

from __future__ import annotations

import re
import subprocess
from functools import partial
from typing import Any

import trio
from mapperkit import Edge, ModbusSim, actual, device, free_port, model, sim_device, start_tcp_sim, state_is
from trio_asyncio import aio_as_trio

from kubeedge.mappers.sdk import parse_device
from kubeedge.mappers.sdk.runtime import Mapper
from kubeedge.registry import Plugins

DEVICE_ID = "default/meter"
MODEL = model(
    "meter-model",
    [
        {"name": "voltage", "type": "INT", "accessMode": "ReadOnly"},
        {"name": "current", "type": "INT", "accessMode": "ReadOnly"},
        {"name": "beyond", "type": "INT", "accessMode": "ReadOnly"},
        {"name": "setpoint", "type": "INT", "accessMode": "ReadWrite"},
    ],
)


def meter(config: dict[str, Any], visitors: dict[str, dict[str, Any]] | None = None) -> Any:
    visitors = visitors or {
        "voltage": {"register": "HoldingRegister", "offset": 1},
        "current": {"register": "HoldingRegister", "offset": 2},
    }
    return parse_device(device("meter", "meter-model", config, visitors, cycle_ms=100), MODEL)


def spec() -> Any:
    return Plugins().mapper_driver("modbus")


async def test_unreachable_device_goes_offline_then_online_when_it_appears_and_after_it_dies(
    aio_loop: Any, edge: Edge, mosquitto: str
) -> None:
    port = free_port()
    state_topic = f"$hw/events/device/{DEVICE_ID}/state/update"
    config = {"ip": "127.0.0.1", "port": port, "timeout": 500}
    mapper = Mapper([spec()], broker=mosquitto, node="edge-1", devices=[meter(config)])
    async with trio.open_nursery() as nursery:
        await nursery.start(mapper.run)
        await edge.wait_for(state_topic, state_is("offline"))
        sim = await start_tcp_sim(port)
        await sim.set(3, 1, [230])
        await edge.wait_for(state_topic, state_is("online"))
        await edge.wait_for(*actual(DEVICE_ID, "voltage", "230"))
        # the device dies while connected, then comes back: no mapper restart
        edge.clear()
        await sim.stop()
        await edge.wait_for(state_topic, state_is("offline"))
        sim = await start_tcp_sim(port)
        await sim.set(3, 1, [231])
        await edge.wait_for(state_topic, state_is("online"))
        await edge.wait_for(*actual(DEVICE_ID, "voltage", "231"))
        await sim.stop()
        nursery.cancel_scope.cancel()


async def test_exception_responses_make_the_device_unhealthy_and_spare_the_other_points(
    modbus_tcp: ModbusSim, edge: Edge, mosquitto: str
) -> None:
    await modbus_tcp.set(3, 98, [7])
    await modbus_tcp.set(3, 1, [230])
    visitors = {
        "voltage": {"register": "HoldingRegister", "offset": 98},
        # 99..100: register 100 does not exist; merged with 98 the read fails, so points are asked one by one
        "beyond": {"register": "HoldingRegister", "offset": 99, "dataType": "int32"},
        "current": {"register": "HoldingRegister", "offset": 1},
    }
    config = {"ip": "127.0.0.1", "port": modbus_tcp.port}
    mapper = Mapper([spec()], broker=mosquitto, node="edge-1", devices=[meter(config, visitors)])
    async with trio.open_nursery() as nursery:
        await nursery.start(mapper.run)
        worker = await mapper.wait_device(DEVICE_ID)
        await edge.wait_for(f"$hw/events/device/{DEVICE_ID}/state/update", state_is("unhealthy"))
        await edge.wait_for(*actual(DEVICE_ID, "voltage", "7"))
        await edge.wait_for(*actual(DEVICE_ID, "current", "230"))
        assert "illegal data address" in worker.errors["beyond"]
        assert "beyond" not in worker.values
        nursery.cancel_scope.cancel()


async def test_wrong_device_id_is_reported_unhealthy(modbus_tcp: ModbusSim, edge: Edge, mosquitto: str) -> None:
    config = {"ip": "127.0.0.1", "port": modbus_tcp.port, "slaveID": 9}
    mapper = Mapper([spec()], broker=mosquitto, node="edge-1", devices=[meter(config)])
    async with trio.open_nursery() as nursery:
        await nursery.start(mapper.run)
        worker = await mapper.wait_device(DEVICE_ID)
        await edge.wait_for(f"$hw/events/device/{DEVICE_ID}/state/update", state_is("unhealthy"))
        assert "exception response 4" in worker.errors["voltage"]
        nursery.cancel_scope.cancel()


async def test_a_device_that_never_answers_times_out_and_is_reported_offline(
    aio_loop: Any, edge: Edge, mosquitto: str
) -> None:
    accepted = trio.Event()

    async def silent(stream: trio.SocketStream) -> None:
        accepted.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        config = {"ip": "127.0.0.1", "port": port, "timeout": 300}
        mapper = Mapper([spec()], broker=mosquitto, node="edge-1", devices=[meter(config)])
        await nursery.start(mapper.run)
        state_topic = f"$hw/events/device/{DEVICE_ID}/state/update"
        await edge.wait_for(state_topic, state_is("online"))  # TCP connects ...
        await accepted.wait()
        await edge.wait_for(state_topic, state_is("offline"))  # ... but no reply within 300 ms
        worker = mapper.workers[DEVICE_ID]
        assert worker.values == {} and worker.requests_failed >= 1
        nursery.cancel_scope.cancel()


# -- RTU over a socat pty pair --------------------------------------------------------------------------


async def open_pty_pair(nursery: trio.Nursery) -> tuple[str, str, trio.Process]:
    process = await trio.lowlevel.open_process(
        ["socat", "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"], stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    text = b""
    with trio.fail_after(5):
        while len(re.findall(rb"PTY is (\S+)", text)) < 2:
            text += await process.stderr.receive_some(4096)
    first, second = (p.decode() for p in re.findall(rb"PTY is (\S+)", text)[:2])

    async def drain() -> None:
        assert process.stderr is not None
        async for _ in process.stderr:
            pass

    nursery.start_soon(drain)
    return first, second, process


async def test_rtu_reads_and_writes_through_a_pty_pair(aio_loop: Any, edge: Edge, mosquitto: str) -> None:
    from pymodbus import FramerType
    from pymodbus.server import ModbusSerialServer

    async with trio.open_nursery() as nursery:
        server_side, client_side, socat = await open_pty_pair(nursery)

        async def start() -> Any:
            server = ModbusSerialServer(sim_device(3), framer=FramerType.RTU, port=server_side, baudrate=19200)
            await server.serve_forever(background=True)
            return server

        server = await aio_as_trio(start)()
        sim = ModbusSim(server, server_side, [])
        try:
            await sim.set(3, 1, [120], device_id=3)
            await sim.set(3, 2, [7], device_id=3)
            config = {"serialPort": client_side, "baudRate": 19200, "parity": "none", "slaveID": 3, "timeout": 1000}
            visitors = {
                "voltage": {"register": "HoldingRegister", "offset": 1},
                "setpoint": {"register": "HoldingRegister", "offset": 2},
            }
            mapper = Mapper([spec()], broker=mosquitto, node="edge-1", devices=[meter(config, visitors)])
            await nursery.start(mapper.run)
            await edge.wait_for(*actual(DEVICE_ID, "voltage", "120"))
            await edge.publish(f"$hw/events/device/{DEVICE_ID}/twin/update/delta", {"delta": {"setpoint": "9"}})
            await edge.wait_for(*actual(DEVICE_ID, "setpoint", "9"))
            assert await sim.get(3, 2, device_id=3) == [9]
        finally:
            await sim.stop()
            socat.terminate()
            nursery.cancel_scope.cancel()

"""The Modbus mapper against pymodbus's simulator over TCP: every table and type, writes, coalescing."""

from __future__ import annotations

import json
import struct
from typing import Any

import trio
from mapperkit import Edge, ModbusSim, actual, device, model, state_is

from kubeedge.mappers.sdk import parse_device
from kubeedge.mappers.sdk.runtime import DeviceWorker, Mapper
from kubeedge.metrics import Metrics
from kubeedge.registry import Plugins

DEVICE_ID = "default/plc-1"

MODEL = model(
    "plc-model",
    [
        {"name": "temperature", "type": "FLOAT", "accessMode": "ReadOnly"},
        {"name": "negative", "type": "INT", "accessMode": "ReadOnly"},
        {"name": "counter", "type": "INT", "accessMode": "ReadOnly"},
        {"name": "energy", "type": "INT", "accessMode": "ReadOnly"},
        {"name": "pressure", "type": "FLOAT", "accessMode": "ReadOnly"},
        {"name": "precise", "type": "DOUBLE", "accessMode": "ReadOnly"},
        {"name": "label", "type": "STRING", "accessMode": "ReadWrite"},
        {"name": "setpoint", "type": "INT", "accessMode": "ReadWrite", "minimum": "0", "maximum": "100"},
        {"name": "target", "type": "FLOAT", "accessMode": "ReadWrite", "minimum": "-10", "maximum": "60"},
        {"name": "pump", "type": "BOOLEAN", "accessMode": "ReadWrite"},
        {"name": "door", "type": "BOOLEAN", "accessMode": "ReadOnly"},
        {"name": "humidity", "type": "FLOAT", "accessMode": "ReadOnly"},
    ],
)

VISITORS: dict[str, dict[str, Any]] = {
    # holding registers 0..13, adjacent: one request when coalesced
    "temperature": {"register": "HoldingRegister", "offset": 0, "limit": 1, "dataType": "int16", "scale": 0.1},
    "negative": {"register": "HoldingRegister", "offset": 1, "dataType": "int16"},
    "counter": {"register": "HoldingRegister", "offset": 2, "dataType": "uint32", "isRegisterSwap": True},
    "energy": {"register": "HoldingRegister", "offset": 4, "dataType": "int32"},
    "pressure": {"register": "HoldingRegister", "offset": 6, "dataType": "float32", "isSwap": True},
    "precise": {"register": "HoldingRegister", "offset": 8, "dataType": "float64"},
    "label": {"register": "HoldingRegister", "offset": 12, "limit": 3, "dataType": "string"},
    "setpoint": {"register": "HoldingRegister", "offset": 20, "dataType": "uint16"},
    "target": {"register": "HoldingRegister", "offset": 21, "dataType": "int16", "scale": 0.5, "valueOffset": -20},
    "pump": {"register": "CoilRegister", "offset": 3},
    "door": {"register": "DiscreteInputRegister", "offset": 5},
    "humidity": {"register": "InputRegister", "offset": 0, "dataType": "uint16", "scale": 0.01},
}


def words(fmt: str, value: Any) -> list[int]:
    raw = struct.pack(">" + fmt, value)
    return list(struct.unpack(f">{len(raw) // 2}H", raw))


def swap_bytes(regs: list[int]) -> list[int]:
    return [((r & 0xFF) << 8) | (r >> 8) for r in regs]


async def fill(sim: ModbusSim) -> None:
    await sim.set(3, 0, [215])  # 21.5 after scale 0.1
    await sim.set(3, 1, words("h", -42))
    await sim.set(3, 2, list(reversed(words("I", 3_000_000_000))))
    await sim.set(3, 4, words("i", -123456))
    await sim.set(3, 6, swap_bytes(words("f", 1.5)))
    await sim.set(3, 8, words("d", 2.718281828))
    await sim.set(3, 12, list(struct.unpack(">3H", b"hello\x00")))
    await sim.set(3, 20, [55])
    await sim.set(3, 21, [80])  # 80 * 0.5 - 20 = 20
    await sim.set(1, 3, [True])
    await sim.set(2, 5, [True])
    await sim.set(4, 0, [4567])  # 45.67


def plc(port: int, **protocol: Any) -> Any:
    config = {"ip": "127.0.0.1", "port": port, "slaveID": 1, "timeout": 1000, **protocol}
    return parse_device(device("plc-1", "plc-model", config, VISITORS, cycle_ms=100), MODEL)


def modbus_spec() -> Any:
    return Plugins().mapper_driver("modbus")


def has_all(worker: DeviceWorker) -> bool:
    return len(worker.values) == len(VISITORS)


EXPECTED = {
    "temperature": "21.5",
    "negative": "-42",
    "counter": "3000000000",
    "energy": "-123456",
    "pressure": "1.5",
    "precise": "2.718281828",
    "label": "hello",
    "setpoint": "55",
    "target": "20",
    "pump": "true",
    "door": "true",
    "humidity": "45.67",
}


async def test_reads_every_table_and_type_and_reports_twins(modbus_tcp: ModbusSim, edge: Edge, mosquitto: str) -> None:
    await fill(modbus_tcp)
    mapper = Mapper([modbus_spec()], broker=mosquitto, node="edge-1", devices=[plc(int(modbus_tcp.port))])
    async with trio.open_nursery() as nursery:
        await nursery.start(mapper.run)
        worker = await mapper.wait_device(DEVICE_ID)
        with trio.fail_after(10):
            await worker.wait_for(has_all)
        assert {k: v for k, (v, _) in worker.values.items()} == EXPECTED
        assert worker.values["pump"][1] == "boolean" and worker.values["precise"][1] == "double"
        await edge.wait_for(f"$hw/events/device/{DEVICE_ID}/state/update", state_is("online"))
        update = await edge.wait_for(*actual(DEVICE_ID, "temperature", "21.5"))
        assert update["twin"]["temperature"]["metadata"] == {"type": "float"}
        assert update["twin"]["label"] == {"actual": {"value": "hello"}, "metadata": {"type": "string"}}
        assert isinstance(update["timestamp"], int) and update["event_id"]
        # a new register value reaches the twin on the next cycle
        await modbus_tcp.set(3, 0, [-5 & 0xFFFF])
        await edge.wait_for(*actual(DEVICE_ID, "temperature", "-0.5"))
        nursery.cancel_scope.cancel()


async def test_adjacent_points_are_read_in_one_request(modbus_tcp: ModbusSim, mosquitto: str) -> None:
    await fill(modbus_tcp)
    for coalesce, holding_requests in ((True, 1), (False, 9)):
        modbus_tcp.requests.clear()
        config = {"ip": "127.0.0.1", "port": modbus_tcp.port, "slaveID": 1}
        slow = parse_device(device("plc-1", "plc-model", config, VISITORS, cycle_ms=60_000), MODEL)
        mapper = Mapper([modbus_spec()], broker=mosquitto, devices=[slow], coalesce=coalesce)
        async with trio.open_nursery() as nursery:
            await nursery.start(mapper.run)
            worker = await mapper.wait_device(DEVICE_ID)
            with trio.fail_after(10):
                await worker.wait_for(has_all)
            # holding 0..13 form one span; 20..21 is 6 registers further: within maxGap 16 -> same span
            per_kind = {name: modbus_tcp.requests.count(name) for name in set(modbus_tcp.requests)}
            assert per_kind["ReadHoldingRegistersRequest"] == holding_requests, per_kind
            assert per_kind["ReadCoilsRequest"] == 1 and per_kind["ReadInputRegistersRequest"] == 1
            assert {k: v for k, (v, _) in worker.values.items()} == EXPECTED
            nursery.cancel_scope.cancel()


async def test_desired_value_is_written_and_reported(modbus_tcp: ModbusSim, edge: Edge, mosquitto: str) -> None:
    await fill(modbus_tcp)
    mapper = Mapper([modbus_spec()], broker=mosquitto, node="edge-1", devices=[plc(int(modbus_tcp.port))])
    delta_topic = f"$hw/events/device/{DEVICE_ID}/twin/update/delta"
    result_topic = f"$hw/events/device/{DEVICE_ID}/twin/update/result"
    async with trio.open_nursery() as nursery:
        await nursery.start(mapper.run)
        worker = await mapper.wait_device(DEVICE_ID)
        with trio.fail_after(10):
            await worker.wait_for(has_all)
        await edge.publish(delta_topic, {"event_id": "e1", "timestamp": 1, "twin": {}, "delta": {"setpoint": "77"}})
        await edge.wait_for(*actual(DEVICE_ID, "setpoint", "77"))
        assert await modbus_tcp.get(3, 20) == [77]
        # scale/offset undone on the way down: 30 = raw * 0.5 - 20 -> raw 100
        await edge.publish(delta_topic, {"delta": {"target": "30", "pump": "false", "label": "bye"}})
        await edge.wait_for(*actual(DEVICE_ID, "target", "30"))
        await edge.wait_for(*actual(DEVICE_ID, "pump", "false"))
        assert await modbus_tcp.get(3, 21) == [100]
        assert await modbus_tcp.get(1, 3) == [False]
        assert await modbus_tcp.get(3, 12, 3) == list(struct.unpack(">3H", b"bye\x00\x00\x00"))

        # refused before reaching the device: out of range, not a number, read-only
        edge.clear()
        await edge.publish(delta_topic, {"delta": {"setpoint": "101"}})
        refusal = await edge.wait_for(result_topic, lambda d: "setpoint" in d.get("reason", ""))
        assert refusal["code"] == 400 and "above the maximum 100" in refusal["reason"]
        await edge.publish(delta_topic, {"delta": {"setpoint": "warm"}})
        refusal = await edge.wait_for(result_topic, lambda d: "warm" in d.get("reason", ""))
        assert "not a valid int" in refusal["reason"]
        await edge.publish(delta_topic, {"delta": {"temperature": "20"}})
        refusal = await edge.wait_for(result_topic, lambda d: "ReadOnly" in d.get("reason", ""))
        assert "temperature" in refusal["reason"]
        await edge.wait_for(*actual(DEVICE_ID, "setpoint", "77"))
        assert await modbus_tcp.get(3, 20) == [77]
        assert await modbus_tcp.get(3, 0) == [215]
        nursery.cancel_scope.cancel()


async def test_desired_value_in_the_device_spec_is_applied_on_connect(modbus_tcp: ModbusSim, mosquitto: str) -> None:
    config = {"ip": "127.0.0.1", "port": modbus_tcp.port, "slaveID": 1}
    spec = device(
        "plc-1",
        "plc-model",
        config,
        {"setpoint": VISITORS["setpoint"]},
        extra={"setpoint": {"desired": {"value": "12"}}},
    )
    mapper = Mapper([modbus_spec()], broker=mosquitto, devices=[parse_device(spec, MODEL)])
    async with trio.open_nursery() as nursery:
        await nursery.start(mapper.run)
        worker = await mapper.wait_device(DEVICE_ID)
        with trio.fail_after(10):
            await worker.wait_for(lambda w: w.values.get("setpoint", ("",))[0] == "12")
        assert await modbus_tcp.get(3, 20) == [12]
        nursery.cancel_scope.cancel()


async def test_v1alpha2_device_with_data_topic_and_v1beta1_push_method(
    modbus_tcp: ModbusSim, edge: Edge, mosquitto: str
) -> None:
    await modbus_tcp.set(3, 0, [215])
    await modbus_tcp.set(3, 20, [9])
    alpha_model = {
        "apiVersion": "devices.kubeedge.io/v1alpha2",
        "kind": "DeviceModel",
        "metadata": {"name": "alpha-model", "namespace": "default"},
        "spec": {"properties": [{"name": "temperature", "type": {"double": {"accessMode": "ReadOnly"}}}]},
    }
    alpha = {
        "apiVersion": "devices.kubeedge.io/v1alpha2",
        "kind": "Device",
        "metadata": {"name": "alpha", "namespace": "default"},
        "spec": {
            "deviceModelRef": {"name": "alpha-model"},
            "protocol": {"modbus": {"slaveID": 1}, "common": {"tcp": {"ip": "127.0.0.1", "port": modbus_tcp.port}}},
            "propertyVisitors": [
                {
                    "propertyName": "temperature",
                    "collectCycle": 100_000_000,
                    "reportCycle": 100_000_000,
                    "modbus": {"register": "HoldingRegister", "offset": 0, "limit": 1, "scale": 0.1},
                }
            ],
            "data": {"dataTopic": "$ke/events/device/default/alpha/data/update"},
        },
    }
    config = {"ip": "127.0.0.1", "port": modbus_tcp.port}
    pushed = device(
        "plc-1",
        "plc-model",
        config,
        {"setpoint": VISITORS["setpoint"]},
        extra={"setpoint": {"pushMethod": {"mqtt": {"address": mosquitto, "topic": "custom/setpoint", "qos": 1}}}},
    )
    mapper = Mapper(
        [modbus_spec()], broker=mosquitto, devices=[parse_device(alpha, alpha_model), parse_device(pushed, MODEL)]
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(mapper.run)
        await edge.wait_for(*actual("default/alpha", "temperature", "21.5"))
        data = await edge.wait_for("$ke/events/device/default/alpha/data/update")
        assert data["data"]["temperature"]["value"] == "21.5"
        assert data["data"]["temperature"]["metadata"]["type"] == "double"
        pushed_data = await edge.wait_for("custom/setpoint")
        assert pushed_data["data"]["setpoint"]["value"] == "9"
        nursery.cancel_scope.cancel()


class Receiver:
    """An HTTP endpoint on 127.0.0.1 (a real socket) that keeps every POST: path, content type, body."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, bytes]] = []
        self.changed = trio.Event()
        self.port = 0

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async def handle(stream: trio.SocketStream) -> None:
            buffer = b""
            async with stream:
                while True:
                    while b"\r\n\r\n" not in buffer:
                        chunk = await stream.receive_some()
                        if not chunk:
                            return
                        buffer += chunk
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    lines = head.decode().split("\r\n")
                    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
                    length = int(headers.get("content-length", "0"))
                    while len(buffer) < length:
                        buffer += await stream.receive_some()
                    body, buffer = buffer[:length], buffer[length:]
                    self.posts.append((lines[0].split()[1], headers.get("content-type", ""), body))
                    self.changed.set()
                    self.changed = trio.Event()
                    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(handle, listeners)

    async def wait_for(self, path: str) -> tuple[str, bytes]:
        with trio.fail_after(10):
            while True:
                for seen, content_type, body in self.posts:
                    if seen == path:
                        return content_type, body
                await self.changed.wait()


async def test_push_method_http_and_otel_reach_their_endpoints(modbus_tcp: ModbusSim, mosquitto: str) -> None:
    """pushMethod.http posts KubeEdge's form body; pushMethod.otel exports an OTLP/HTTP JSON gauge; dbMethod,
    which this SDK does not send, leaves the device working."""
    from urllib.parse import parse_qs

    await modbus_tcp.set(3, 20, [42])
    await modbus_tcp.set(3, 0, [215])
    receiver = Receiver()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(receiver.serve)
        pushed = device(
            "pusher",
            "plc-model",
            {"ip": "127.0.0.1", "port": modbus_tcp.port},
            {"setpoint": VISITORS["setpoint"], "temperature": VISITORS["temperature"]},
            extra={
                "setpoint": {
                    "pushMethod": {
                        "http": {"hostName": "http://127.0.0.1", "port": port, "requestPath": "/setpoint"},
                        "dbMethod": {"redis": {"redisClientConfig": {"addr": "127.0.0.1:6379"}}},
                    }
                },
                "temperature": {"pushMethod": {"otel": {"endpointURL": f"http://127.0.0.1:{port}/v1/metrics"}}},
            },
        )
        config = parse_device(pushed, MODEL)
        assert [p.push_unsupported for p in config.points] == [("dbMethod",), ()]
        metrics = Metrics()  # what a node's ctx.metrics is
        mapper = Mapper([modbus_spec()], broker=mosquitto, devices=[config], metrics=metrics)
        await nursery.start(mapper.run)

        content_type, body = await receiver.wait_for("/setpoint")
        labels = {"protocol": "modbus", "device": "default/pusher"}
        assert metrics.value("kubeedge_mapper_points_read_total", **labels) >= 2
        assert metrics.value("kubeedge_mapper_device_online", **labels) == 1
        assert content_type == "application/x-www-form-urlencoded"
        form = parse_qs(body.decode())
        assert form["setpoint"] == ["42"]
        assert len(form["time"][0]) == len("2026-11-22 03:52:28"), form

        content_type, body = await receiver.wait_for("/v1/metrics")
        assert content_type == "application/json"
        export = json.loads(body)
        resource = export["resourceMetrics"][0]
        attributes = {a["key"]: a["value"]["stringValue"] for a in resource["resource"]["attributes"]}
        assert attributes["device.name"] == "pusher" and attributes["device.namespace"] == "default"
        metric = resource["scopeMetrics"][0]["metrics"][0]
        assert metric["name"] == "temperature"
        assert metric["gauge"]["dataPoints"][0]["asDouble"] == 21.5
        nursery.cancel_scope.cancel()

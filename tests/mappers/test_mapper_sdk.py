"""The SDK's pure parts: Device/DeviceModel parsing (v1beta1, v1alpha2), schema checks, values, coalescing,
the Modbus codec, twin payloads and the MQTT codec."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from mapperkit import device, model, write_yaml

from kubeedge.mappers.modbus import codec
from kubeedge.mappers.sdk import (
    DeviceError,
    SpecError,
    WriteRefused,
    check_range,
    coalesce,
    format_value,
    from_device,
    load_device_files,
    load_spec,
    parse_device,
    parse_value,
    to_device,
    twin,
    validate_device,
)
from kubeedge.mappers.sdk.mqtt import (
    PacketReader,
    decode_publish,
    encode_connect,
    encode_publish,
    encode_subscribe,
    parse_broker,
)

ALPHA_MODEL = {
    "apiVersion": "devices.kubeedge.io/v1alpha2",
    "kind": "DeviceModel",
    "metadata": {"name": "sensor-model", "namespace": "factory"},
    "spec": {
        "properties": [
            {"name": "temperature", "type": {"int": {"accessMode": "ReadWrite", "minimum": 0, "maximum": 100}}},
            {"name": "label", "type": {"string": {"accessMode": "ReadOnly"}}},
        ]
    },
}
ALPHA_DEVICE = {
    "apiVersion": "devices.kubeedge.io/v1alpha2",
    "kind": "Device",
    "metadata": {"name": "sensor", "namespace": "factory"},
    "spec": {
        "deviceModelRef": {"name": "sensor-model"},
        "protocol": {
            "modbus": {"slaveID": 2},
            "common": {"tcp": {"ip": "10.0.0.5", "port": 5020}, "collectTimeout": 500},
        },
        "propertyVisitors": [
            {
                "propertyName": "temperature",
                "collectCycle": 500_000_000,
                "reportCycle": 2_000_000_000,
                "modbus": {"register": "HoldingRegister", "offset": 3, "limit": 1, "scale": 0.5, "isSwap": True},
            },
            {"propertyName": "label", "modbus": {"register": "InputRegister", "offset": 10, "limit": 4}},
        ],
        "data": {"dataTopic": "$ke/events/device/factory/sensor/data/update"},
    },
    "status": {"twins": [{"propertyName": "temperature", "desired": {"value": "40"}}]},
}


def test_v1alpha2_builtin_protocol_blocks_become_config_data() -> None:
    config = parse_device(ALPHA_DEVICE, ALPHA_MODEL)
    assert (config.id, config.protocol, config.model) == ("factory/sensor", "modbus", "sensor-model")
    assert config.protocol_config == {"slaveID": 2, "ip": "10.0.0.5", "port": 5020, "collectTimeout": 500}
    temperature, label = config.points
    assert temperature.config == {"register": "HoldingRegister", "offset": 3, "limit": 1, "scale": 0.5, "isSwap": True}
    assert (temperature.collect_cycle, temperature.report_cycle) == (0.5, 2.0)
    assert temperature.property.type == "int" and temperature.property.maximum == 100
    assert temperature.desired == "40" and temperature.scale == 0.5
    assert label.property.type == "string" and not label.property.writable
    assert (label.collect_cycle, label.report_cycle) == (1.0, 1.0)
    assert config.data_topic == "$ke/events/device/factory/sensor/data/update"
    validate_device(load_spec("modbus"), config)


def test_v1alpha2_bluetooth_and_customized_protocols() -> None:
    ble = json.loads(json.dumps(ALPHA_DEVICE))
    ble["spec"]["protocol"] = {"bluetooth": {"macAddress": "AA:BB:CC:DD:EE:01"}}
    ble["spec"]["propertyVisitors"] = [
        {"propertyName": "temperature", "bluetooth": {"characteristicUUID": "2a19", "dataConverter": {"startIndex": 0}}}
    ]
    config = parse_device(ble, ALPHA_MODEL)
    assert config.protocol == "ble" and config.protocol_config == {"macAddress": "AA:BB:CC:DD:EE:01"}
    assert config.points[0].config["characteristicUUID"] == "2a19"
    custom = json.loads(json.dumps(ALPHA_DEVICE))
    custom["spec"]["protocol"] = {"customizedProtocol": {"protocolName": "kvline", "configData": {"host": "h"}}}
    custom["spec"]["propertyVisitors"] = [
        {"propertyName": "temperature", "customizedProtocol": {"protocolName": "kvline", "configData": {"key": "t"}}}
    ]
    config = parse_device(custom, ALPHA_MODEL)
    assert (config.protocol, config.protocol_config, config.points[0].config) == ("kvline", {"host": "h"}, {"key": "t"})


def test_v1beta1_device_with_model_visitors_push_method_and_desired() -> None:
    beta_model = model(
        "m",
        [
            {"name": "t", "type": "DOUBLE", "accessMode": "ReadWrite", "minimum": "-5.5", "maximum": "50"},
            {"name": "c", "type": "INT", "visitors": {"protocolName": "modbus", "configData": {"offset": 7}}},
        ],
    )
    beta = device(
        "d",
        "m",
        {"ip": "127.0.0.1"},
        {"t": {"register": "HoldingRegister", "offset": 1}, "c": {"register": "InputRegister"}},
        extra={
            "t": {"desired": {"value": "21"}, "pushMethod": {"mqtt": {"topic": "custom/t", "qos": 1}}},
            "c": {"reportToCloud": False},
        },
    )
    config = parse_device(beta, beta_model)
    t, c = config.points
    assert t.property.type == "double" and (t.property.minimum, t.property.maximum) == (-5.5, 50.0)
    assert t.desired == "21" and t.push_mqtt == {"topic": "custom/t", "qos": 1}
    assert c.config == {"offset": 7, "register": "InputRegister"}  # the device's visitor completes the model's
    assert not c.report_to_cloud and c.property.type == "int" and c.property.writable


def test_device_errors_name_the_object_and_field(tmp_path: Path) -> None:
    beta_model = model("m", [{"name": "t", "type": "INT"}])
    with pytest.raises(DeviceError, match=r"property 'x' is not in DeviceModel m \(it has: t\)"):
        parse_device(device("d", "m", {}, {"x": {}}), beta_model)
    with pytest.raises(DeviceError, match="unknown type 'decimal'"):
        parse_device(device("d", "m", {}, {"t": {}}), model("m", [{"name": "t", "type": "DECIMAL"}]))
    broken = device("d", "m", {}, {"t": {}})
    broken["spec"]["properties"][0]["collectCycle"] = "soon"
    with pytest.raises(DeviceError, match="nanoseconds"):
        parse_device(broken, beta_model)
    file = write_yaml(tmp_path / "d.yaml", beta_model, device("d", "m", {"ip": "h"}, {"t": {"offset": 1}}))
    assert [d.id for d in load_device_files([file])] == ["default/d"]
    (tmp_path / "bad.yaml").write_text("kind: [")
    with pytest.raises(DeviceError, match="bad.yaml: not valid YAML"):
        load_device_files([tmp_path / "bad.yaml"])


def test_schema_errors_give_the_path_of_the_bad_field() -> None:
    spec = load_spec("modbus")
    beta_model = model("m", [{"name": "t", "type": "INT"}, {"name": "u", "type": "INT"}])
    good = {"register": "HoldingRegister", "offset": 1}
    cases: list[tuple[dict[str, Any], dict[str, dict[str, Any]], str]] = [
        ({"ip": "h", "port": "502"}, {"t": good}, r"spec\.protocol\.configData\.port: expected integer, got str '502'"),
        ({"port": 502}, {"t": good}, r"spec\.protocol\.configData: a Modbus device needs either ip .* or serialPort"),
        ({"ip": "h", "baud": 1}, {"t": good}, r"spec\.protocol\.configData\.baud: unknown key \(allowed: .*baudRate"),
        (
            {"ip": "h"},
            {"t": good, "u": {"register": "Holding", "offset": 1}},
            r"spec\.properties\[1\]\.visitors\.configData\.register: expected one of 'CoilRegister'.*got 'Holding'",
        ),
        ({"ip": "h"}, {"t": {"register": "InputRegister"}}, r"properties\[0\]\.visitors\.configData: 'offset' is a"),
    ]
    for protocol, visitors, message in cases:
        config = parse_device(device("d", "m", protocol, visitors), beta_model)
        with pytest.raises(SpecError, match=message):
            validate_device(spec, config)
    for name in ("modbus", "opcua", "ble", "kvline"):
        assert set(load_spec(name)["properties"]) == {"protocol", "visitor"}


def test_values_convert_to_the_model_type_with_scale_and_offset() -> None:
    assert from_device(215, "float", scale=0.1) == pytest.approx(21.5)
    assert from_device(215, "int", scale=0.1) == 22
    assert from_device(80, "double", scale=0.5, offset=-20) == 20.0
    assert from_device(1, "boolean") is True and from_device("false", "boolean") is False
    assert from_device(b"ab\x00\x00", "string") == "ab"
    assert from_device("42", "int") == 42
    with pytest.raises(ValueError):
        from_device(b"\x01", "int")
    assert [format_value(v, k) for v, k in [(21.5, "float"), (20.0, "double"), (True, "boolean"), (7, "int")]] == [
        "21.5",
        "20",
        "true",
        "7",
    ]
    assert format_value(b"\x01\x02", "bytes") == "AQI="
    assert parse_value("42", "int") == 42 and parse_value("1e2", "int") == 100
    assert parse_value("on", "boolean") is True and parse_value("2.5", "double") == 2.5
    for text, kind in [("4.5", "int"), ("warm", "float"), ("maybe", "boolean"), ("nan", "double")]:
        with pytest.raises(WriteRefused, match="is not a valid"):
            parse_value(text, kind)
    assert check_range(5, 0, 10) is None
    assert check_range(11, 0, 10) == "11 is above the maximum 10"
    assert check_range(-1.5, -1, None) == "-1.5 is below the minimum -1"
    assert to_device(30, scale=0.5, offset=-20) == 100
    with pytest.raises(WriteRefused):
        to_device(1, scale=0, offset=1)


def test_coalesce_merges_adjacent_ranges_within_limits() -> None:
    items = [("h", 0, 1), ("h", 1, 2), ("h", 5, 1), ("h", 40, 1), ("i", 0, 1), ("h", 3, 1)]
    spans = coalesce(items, lambda item: item, max_count=10, max_gap=2)
    assert [(s.area, s.start, s.count, len(s.items)) for s in spans] == [
        ("h", 0, 6, 4),
        ("h", 40, 1, 1),
        ("i", 0, 1, 1),
    ]
    spans = coalesce(items, lambda item: item, max_count=10, max_gap=0)
    assert [(s.start, s.count) for s in spans if s.area == "h"] == [(0, 4), (5, 1), (40, 1)]
    assert len(coalesce(items, lambda item: item, max_count=10, enabled=False)) == len(items)
    many = [("h", i, 1) for i in range(300)]
    assert [s.count for s in coalesce(many, lambda item: item, max_count=125)] == [125, 125, 50]


def test_modbus_codec_types_and_swaps() -> None:
    assert codec.encode(-2, "int16", count=1) == [0xFFFE]
    assert codec.decode([0xFFFE], "int16") == -2 and codec.decode([0xFFFE], "uint16") == 0xFFFE
    regs = codec.encode(1.5, "float32", count=2)
    assert regs == list(struct.unpack(">2H", struct.pack(">f", 1.5)))
    assert codec.decode(list(reversed(regs)), "float32", word_swap=True) == 1.5
    swapped = codec.encode(123456789, "uint32", count=2, byte_swap=True, word_swap=True)
    assert codec.decode(swapped, "uint32", byte_swap=True, word_swap=True) == 123456789
    assert codec.decode(codec.encode(-(2**40), "int64", count=4), "int64") == -(2**40)
    assert codec.decode(codec.encode(3.25, "float64", count=4, word_swap=True), "float64", word_swap=True) == 3.25
    assert codec.encode("hi", "string", count=2) == [0x6869, 0]
    assert codec.decode([0x6869, 0], "string") == "hi"
    assert codec.decode([1], "boolean") is True
    with pytest.raises(ValueError, match="does not fit int16"):
        codec.encode(40000, "int16", count=1)
    with pytest.raises(ValueError, match="longer than 2 bytes"):
        codec.encode("abc", "string", count=1)


def test_twin_payloads_match_kubeedge() -> None:
    update = json.loads(twin.twin_update({"temperature": ("2", "int")}))
    assert update["twin"] == {"temperature": {"actual": {"value": "2"}, "metadata": {"type": "int"}}}
    assert set(update) == {"event_id", "timestamp", "twin"}
    assert json.loads(twin.state_update("online"))["state"] == "online"
    data = json.loads(twin.data_update({"t": ("1.5", "float")}))
    assert data["data"]["t"]["value"] == "1.5" and data["data"]["t"]["metadata"]["type"] == "float"
    assert twin.device_topic("ns/d", "twin/update") == "$hw/events/device/ns/d/twin/update"
    assert twin.device_of("$hw/events/device/ns/d/twin/update/delta") == ("ns/d", "twin/update/delta")
    assert twin.device_of("$hw/events/node/n/membership/get") is None
    assert twin.parse_delta('{"twin": {}, "delta": {"a": "1", "b": 2}}') == {"a": "1", "b": "2"}
    with pytest.raises(ValueError, match="not JSON"):
        twin.parse_delta(b"{nope")
    with pytest.raises(ValueError, match="no 'delta'"):
        twin.parse_delta("{}")
    assert twin.parse_membership('{"devices": [{"id": "a"}]}') == ([{"id": "a"}], [], True)
    assert twin.parse_membership('{"added_devices": null, "removed_devices": [{"id": "b"}]}') == (
        [],
        [{"id": "b"}],
        False,
    )
    result = json.loads(twin.twin_result(400, "why"))
    assert (result["code"], result["reason"]) == (400, "why")


def test_mqtt_codec_round_trips_and_splits_streams() -> None:
    connect = encode_connect("c1", keepalive=30, username="u", password="p")
    assert connect[0] == 0x10 and connect[2:8] == b"\x00\x04MQTT" and connect[9] == 0xC2
    big = b"x" * 20000  # a remaining length of three bytes
    stream = (
        encode_publish("a/b", b"hi", qos=1, packet_id=7) + encode_publish("t", big) + encode_subscribe(3, [("#", 0)])
    )
    reader = PacketReader()
    packets = []
    for i in range(0, len(stream), 1000):  # arbitrary fragmentation
        packets += reader.feed(stream[i : i + 1000])
    assert [p.kind for p in packets] == [3, 3, 8]
    assert decode_publish(packets[0]) == ("a/b", b"hi", 1, 7)
    assert decode_publish(packets[1]) == ("t", big, 0, 0)
    address = parse_broker("tcp://127.0.0.1:1884")
    assert (address.host, address.port, address.tls) == ("127.0.0.1", 1884, False)
    secure = parse_broker("mqtts://user:p%40ss@broker.local")
    assert (secure.port, secure.tls, secure.username, secure.password) == (8883, True, "user", "p@ss")
    assert parse_broker("localhost:1883").port == 1883
    with pytest.raises(Exception, match="scheme"):
        parse_broker("http://x")


def test_check_device_for_the_cloud_finds_the_spec_and_names_the_bad_field() -> None:
    from kubeedge.mappers.sdk import check_device

    beta_model = model("m", [{"name": "t", "type": "INT"}])
    good = device("d", "m", {"ip": "10.0.0.1", "port": 502}, {"t": {"register": "HoldingRegister", "offset": 0}})
    spec = check_device(good, beta_model)
    assert spec is not None and spec.protocol == "modbus"
    bad = device("d", "m", {"ip": "10.0.0.1", "port": 70000}, {"t": {"register": "HoldingRegister", "offset": 0}})
    with pytest.raises(SpecError) as caught:
        check_device(bad, beta_model)
    assert caught.value.path == "spec.protocol.configData.port"
    assert caught.value.subject == "Device default/d" and "70000" in caught.value.reason
    alpha = json.loads(json.dumps(ALPHA_DEVICE))
    alpha["spec"]["protocol"] = {"bluetooth": {"macAddress": "not-a-mac"}}
    alpha["spec"]["propertyVisitors"] = [{"propertyName": "temperature", "bluetooth": {"characteristicUUID": "2a19"}}]
    with pytest.raises(SpecError) as caught:
        check_device(alpha, ALPHA_MODEL)  # v1alpha2 "bluetooth" is served by the ble mapper
    assert caught.value.path == "spec.protocol.macAddress"
    other = device("d", "m", {}, {"t": {}}, protocol="zigbee")
    assert check_device(other, beta_model) is None


def test_push_payloads() -> None:
    from kubeedge.mappers.sdk import push

    assert push.http_url({"hostName": "10.0.0.5", "port": 8080, "requestPath": "data"}) == "http://10.0.0.5:8080/data"
    assert push.http_url({"hostName": "https://sink.example/", "requestPath": "/in"}) == "https://sink.example/in"
    with pytest.raises(ValueError, match="hostName is empty"):
        push.http_url({"port": 80})
    assert push.http_body("a b", "1&2", 0).startswith(b"a%20b=1%262&time=")

    def point(value: str, kind: str) -> dict[str, Any] | None:
        export = push.otlp_gauge("d", "ns", "p", value, kind, 1_000)
        return None if export is None else export["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]

    assert point("7", "int") == {"name": "p", "gauge": {"dataPoints": [{"timeUnixNano": "1000000000", "asInt": "7"}]}}
    assert point("true", "boolean")["gauge"]["dataPoints"][0]["asInt"] == "1"  # type: ignore[index]
    assert point("2.5", "float")["gauge"]["dataPoints"][0]["asDouble"] == 2.5  # type: ignore[index]
    assert point("hello", "string") is None  # a string is no metric

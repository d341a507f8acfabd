"""The DeviceModel and Device of the demo's thermostat (devices.kubeedge.io/v1beta1), as kubectl would apply."""

from __future__ import annotations

from typing import Any

SECOND_NS = 1_000_000_000
MODEL = "thermostat-model"
DEVICE = "thermostat"


def device_model(namespace: str = "default") -> dict[str, Any]:
    def prop(name: str, kind: str, access: str, unit: str = "", **bounds: float) -> dict[str, Any]:
        return {
            "name": name,
            "type": kind,
            "accessMode": access,
            "unit": unit,
            **{k: str(v) for k, v in bounds.items()},
        }

    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": MODEL, "namespace": namespace},
        "spec": {
            "protocol": "modbus",
            "properties": [
                prop("temperature", "FLOAT", "ReadOnly", "Cel"),
                prop("humidity", "FLOAT", "ReadOnly", "%"),
                prop("setpoint", "FLOAT", "ReadWrite", "Cel", minimum=5, maximum=35),
                prop("power", "BOOLEAN", "ReadWrite"),
            ],
        },
    }


def device(
    node: str, modbus_port: int, *, host: str = "127.0.0.1", namespace: str = "default", cycle_ns: int = SECOND_NS // 2
) -> dict[str, Any]:
    def prop(
        name: str,
        register: str,
        offset: int,
        data_type: str = "",
        scale: float | None = None,
        desired: str | None = None,
    ) -> dict[str, Any]:
        config: dict[str, Any] = {"register": register, "offset": offset}
        if data_type:
            config["dataType"] = data_type
        if scale is not None:
            config["scale"] = scale
        entry: dict[str, Any] = {
            "name": name,
            "visitors": {"protocolName": "modbus", "configData": config},
            "collectCycle": cycle_ns,
            "reportCycle": cycle_ns,
            "reportToCloud": True,
        }
        if desired is not None:
            entry["desired"] = {"value": desired}
        return entry

    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": DEVICE, "namespace": namespace, "labels": {"demo": "thermostat"}},
        "spec": {
            "deviceModelRef": {"name": MODEL},
            "nodeName": node,
            "protocol": {"protocolName": "modbus", "configData": {"ip": host, "port": modbus_port, "slaveID": 1}},
            "properties": [
                prop("temperature", "InputRegister", 0, "int16", 0.1),
                prop("humidity", "InputRegister", 1, "uint16", 0.1),
                prop("setpoint", "HoldingRegister", 10, "int16", 0.1, desired="21.5"),
                prop("power", "CoilRegister", 0),
            ],
        },
    }

"""The ``devicecontroller`` module: Device/DeviceModel objects to membership and twin messages for edge
nodes; reported twins and device state back to ``Device.status`` and the ``DeviceStatus`` object.
"""

from __future__ import annotations

from typing import Any

from kubeedge import hookimpl

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "kubeconfig": {"type": "string", "description": "default: <data-dir>/kubeconfig.yaml (the embedded API's)"},
        "statusWorkers": {"type": "integer", "minimum": 1, "description": "concurrent Device status writers"},
    },
}


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    return CONFIG_SCHEMA


@hookimpl
def kubeedge_module(config: dict[str, Any]) -> Any:
    from .controller import DeviceController

    return DeviceController(config)

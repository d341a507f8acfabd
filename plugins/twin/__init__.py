"""The ``twin`` plugin: KubeEdge's DeviceTwin for the edge; see :mod:`.module`."""

from __future__ import annotations

from typing import Any

from kubeedge import hookimpl

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "enable": {"type": "boolean"},
        "batchSize": {
            "type": "integer",
            "minimum": 1,
            "description": "messages handled per store transaction (replies follow the write)",
        },
    },
}


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    return SCHEMA


@hookimpl
def kubeedge_module(config: dict[str, Any]) -> Any:
    from .module import DeviceTwin

    return DeviceTwin(config)

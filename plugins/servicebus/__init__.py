"""The ``servicebus`` plugin: KubeEdge's ServiceBus (HTTP to and from edge apps); see :mod:`.module`."""

from __future__ import annotations

from typing import Any

from kubeedge import hookimpl

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "enable": {"type": "boolean"},
        "address": {"type": "string", "description": "listen address for edge apps (default 127.0.0.1)"},
        "port": {"type": "integer", "minimum": 0, "maximum": 65535, "description": "default 9060; 0 picks one"},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "description": "seconds to wait for the cloud/app"},
        "maxConcurrent": {"type": "integer", "minimum": 1},
    },
}


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    return SCHEMA


@hookimpl
def kubeedge_module(config: dict[str, Any]) -> Any:
    from .module import ServiceBus

    return ServiceBus(config)

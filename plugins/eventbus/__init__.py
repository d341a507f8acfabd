"""The ``eventbus`` plugin: KubeEdge's EventBus (MQTT) for the edge; see :mod:`.module`.

Kept cheap to import: amqtt and paho are imported when the module runs.
"""

from __future__ import annotations

from typing import Any

from kubeedge import hookimpl

_SERVER = {"type": "string", "pattern": r"^(tcp|mqtt|ssl|tls|mqtts)://[^:/]+:[0-9]{1,5}$"}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "enable": {"type": "boolean"},
        "mqttMode": {
            "description": "0/internal: embedded broker only; 1/both; 2/external: external broker only (default)",
            "enum": [0, 1, 2, "internal", "both", "external"],
        },
        "mqttServerInternal": {**_SERVER, "description": "embedded broker listener; port 0 picks a free port"},
        "mqttServerExternal": {**_SERVER, "description": "external broker (mosquitto, EMQX) to connect to"},
        "mqttQOS": {"enum": [0, 1, 2]},
        "mqttRetain": {"type": "boolean"},
        "mqttSessionQueueSize": {"type": "integer", "minimum": 0, "description": "accepted for edgecore.yaml"},
        "passwordFile": {"type": "string", "description": "amqtt password file; required off loopback"},
        "tls": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "certFile": {"type": "string"},
                "keyFile": {"type": "string"},
                "caFile": {"type": "string"},
            },
        },
        "mqttUsername": {"type": "string", "description": "credentials for the external broker"},
        "mqttPassword": {"type": "string"},
        "mqttSubClientID": {"type": "string", "description": "client id at the external broker"},
        "mqttPubClientID": {"type": "string", "description": "accepted for edgecore.yaml (one client here)"},
        "maxBuffer": {
            "type": "integer",
            "minimum": 1,
            "description": "messages kept for the external broker while it is away (oldest dropped beyond)",
        },
        "maxBacklog": {
            "type": "integer",
            "minimum": 16,
            "description": "messages the embedded broker holds (about 2.5 KB each) before it stops reading publishers",
        },
        "ruleTopics": {"type": "array", "items": {"type": "string", "minLength": 1}},
    },
}


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    return SCHEMA


@hookimpl
def kubeedge_module(config: dict[str, Any]) -> Any:
    from .module import EventBus

    return EventBus(config)

"""The ``edgehub`` module plugin (edge; bus name ``websocket``, group ``hub``): the edge end of the link.

It bootstraps the node certificate from a join token when it has none, keeps one mutual-TLS websocket
to cloudhub (heartbeats, reconnects with backoff, certificate rotation), routes cloud messages to the
edge modules by group and uploads what they send it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kubeedge import hookimpl

if TYPE_CHECKING:
    from .hub import EdgeHub

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "server": {"type": "string", "description": "cloudhub websocket address, host:port"},
        "httpServer": {"type": "string", "description": "cloudhub bootstrap URL, https://host:port"},
        "token": {"type": "string", "description": "join token, used when the node has no certificate"},
        "projectID": {"type": "string"},
        "heartbeat": {"type": "number", "exclusiveMinimum": 0, "description": "keepalive period (15 s)"},
        "reconnectMin": {"type": "number", "exclusiveMinimum": 0},
        "reconnectMax": {"type": "number", "exclusiveMinimum": 0},
        "connectTimeout": {"type": "number", "exclusiveMinimum": 0},
        "maxMessageSize": {"type": "integer", "minimum": 1024},
        "uploadBuffer": {"type": "integer", "minimum": 1, "description": "uploads kept while offline"},
        "rotationFraction": {
            "type": "array",
            "items": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "minItems": 2,
            "maxItems": 2,
            "description": "renew the certificate at NotBefore + [lo, hi] of its lifetime ([0.7, 0.9])",
        },
    },
}


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    return SCHEMA


@hookimpl
def kubeedge_module(config: dict[str, Any]) -> EdgeHub:
    from .hub import EdgeHub

    return EdgeHub(config)

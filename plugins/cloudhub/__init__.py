"""The ``cloudhub`` module plugin (cloud): the websocket hub edges connect to, the HTTPS bootstrap
server, per-node reliable queues and ObjectSync records; and the ``keadm`` command.

Heavy imports (cryptography, trio-websocket, hypercorn, peewee) happen in :mod:`.hub` when the module
is built, never on import of this package.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from kubeedge import hookimpl

if TYPE_CHECKING:
    from .hub import CloudHub

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "address": {"type": "string", "description": "listen address (default 0.0.0.0)"},
        "port": {"type": "integer", "minimum": 0, "maximum": 65535, "description": "websocket port (10000)"},
        "httpsPort": {"type": "integer", "minimum": 0, "maximum": 65535, "description": "bootstrap port (10002)"},
        "advertiseAddress": {"type": "array", "items": {"type": "string"}},
        "nodeLimit": {"type": "integer", "minimum": 1},
        "keepaliveInterval": {"type": "number", "exclusiveMinimum": 0},
        "projectID": {"type": "string"},
        "retryInterval": {"type": "number", "exclusiveMinimum": 0, "description": "resend period (5 s)"},
        "maxSends": {"type": "integer", "minimum": 1, "description": "sends before a key is left to sync (5)"},
        "window": {"type": "integer", "minimum": 1, "description": "unacknowledged messages per node"},
        "maxMessageSize": {"type": "integer", "minimum": 1024},
        "edgeCertValidityDays": {"type": "number", "exclusiveMinimum": 0},
        "handshakeTimeout": {"type": "number", "exclusiveMinimum": 0},
        "tokenRefreshSeconds": {"type": "number", "exclusiveMinimum": 0, "description": "token rewrite period"},
        "gcThreshold": {
            "type": "integer",
            "minimum": 0,
            "description": "Python GC generation-0 threshold set at start (0: leave the default)",
        },
        "testIngress": {"type": "boolean", "description": "POST /test/send on the bootstrap port (tests only)"},
    },
}


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    return SCHEMA


@hookimpl
def kubeedge_module(config: dict[str, Any]) -> CloudHub:
    from .hub import CloudHub

    return CloudHub(config)


@hookimpl
def kubeedge_cli_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    from .keadm import add_parser

    add_parser(subparsers)

"""The ``metamanager`` module plugin (edge; bus name ``metamanager``, group ``meta``): the edge's local
store of what the cloud sent (peewee on the node's SQLite), the ACK after each write is committed, and
answers to edge modules' queries from that store whether the cloud is there or not (edge autonomy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kubeedge import hookimpl

if TYPE_CHECKING:
    from .manager import MetaManager

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "metaSyncInterval": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "seconds between pod status re-uploads (60)",
        },
        "batch": {"type": "integer", "minimum": 1, "description": "messages written per transaction (256)"},
    },
}


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    return SCHEMA


@hookimpl
def kubeedge_module(config: dict[str, Any]) -> MetaManager:
    from .manager import MetaManager

    return MetaManager(config)

"""The ``synccontroller`` module plugin (cloud): every ``interval`` seconds (5) it compares the
ObjectSync / ClusterObjectSync records cloudhub keeps with the current objects, and has cloudhub send a
``delete`` for an object that is gone (or whose uid changed) and an ``update`` for one that is newer than
what the edge acknowledged — including keys cloudhub gave up on after its last resend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kubeedge import hookimpl

if TYPE_CHECKING:
    from .controller import SyncController

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "interval": {"type": "number", "exclusiveMinimum": 0, "description": "seconds between passes (5)"},
        "kubeconfig": {
            "type": "string",
            "description": "a real cluster (from cloudcore.yaml); accepted now, used by the API source later",
        },
        "source": {
            "enum": ["cloudhub"],
            "description": "where current objects come from: what cloudhub was last fed (the API comes later)",
        },
    },
}


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    return SCHEMA


@hookimpl
def kubeedge_module(config: dict[str, Any]) -> SyncController:
    from .controller import SyncController

    return SyncController(config)

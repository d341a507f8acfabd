"""The ``metaserver`` module (edge): the edge's local store as a read-only Kubernetes API on 127.0.0.1:10550.

KubeEdge's MetaServer, for edge apps (EdgeMesh, CNI plugins, anything using a Kubernetes client): list,
get and watch pods, configmaps, secrets, services, endpoints and nodes from what metamanager stored. It
reads through metamanager over the bus and follows the changes metamanager forwards to it, so it answers
the same whether the cloud is there or not. Writes are refused with 405 and a Kubernetes ``Status``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kubeedge import hookimpl

if TYPE_CHECKING:
    from .server import MetaServer


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "address": {"type": "string", "minLength": 1, "description": "127.0.0.1"},
            "port": {"type": "integer", "minimum": 0, "maximum": 65535, "description": "10550"},
        },
    }


@hookimpl
def kubeedge_module(config: dict[str, Any]) -> MetaServer:
    from .server import MetaServer

    return MetaServer(config)

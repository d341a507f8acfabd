"""The ``edgemesh`` module (edge): service discovery and proxying for services, from what the edge stored.

It learns Services and Endpoints from metamanager (at start by query, then from every insert, update and
delete metamanager forwards), answers DNS for ``<service>.<namespace>.svc.<clusterDomain>`` (A records of
ready endpoints for headless services, the service's address for the others), forwards other names
upstream, and proxies each service's TCP ports to its ready endpoints, round robin. Everything comes from
the local store, so it keeps working while the cloud is away.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kubeedge import hookimpl

if TYPE_CHECKING:
    from .mesh import EdgeMesh


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "clusterDomain": {"type": "string", "minLength": 1, "description": "cluster.local"},
            "dns": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "enable": {"type": "boolean"},
                    "address": {"type": "string", "description": "listen address (169.254.96.16)"},
                    "port": {"type": "integer", "minimum": 0, "maximum": 65535, "description": "53"},
                    "upstream": {"type": "string", "description": "host[:port]; default: /etc/resolv.conf"},
                    "ttl": {"type": "integer", "minimum": 0},
                },
            },
            "proxy": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "enable": {"type": "boolean"},
                    "address": {"type": "string", "description": "where service ports listen (127.0.0.1)"},
                    "portOffset": {"type": "integer", "description": "added to each service port"},
                },
            },
        },
    }


@hookimpl
def kubeedge_module(config: dict[str, Any]) -> EdgeMesh:
    from .mesh import EdgeMesh

    return EdgeMesh(config)

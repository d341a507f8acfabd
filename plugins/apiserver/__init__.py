"""The ``apiserver`` module: an embedded, Kubernetes-compatible API over the node's SQLite store.

kubectl and the official ``kubernetes`` client work against it: discovery, OpenAPI v3 stubs, list and
watch with resourceVersion, CRUD, merge/JSON/strategic/apply patches, status subresources, selectors,
Table output; core/v1, apps/v1 deployments, leases and the KubeEdge CRDs in ``crds/``. It writes
``<data-dir>/kubeconfig.yaml`` for clients, and runs a small scheduler and deployment controller.
"""

from __future__ import annotations

from typing import Any

from kubeedge import hookimpl

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "address": {"type": "string", "description": "address to listen on (default 127.0.0.1)"},
        "port": {"type": "integer", "minimum": 0, "maximum": 65535, "description": "0 picks a free port"},
        "watchCacheSize": {"type": "integer", "minimum": 10, "description": "events kept for watch resume"},
        "watchBuffer": {"type": "integer", "minimum": 10, "description": "events a slow watcher may lag behind"},
        "bookmarkInterval": {"type": "number", "exclusiveMinimum": 0, "description": "seconds between bookmarks"},
        "scheduler": {"type": "boolean", "description": "run the embedded scheduler and deployment controller"},
    },
}


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    return CONFIG_SCHEMA


@hookimpl
def kubeedge_module(config: dict[str, Any]) -> Any:
    from .server import ApiServer

    return ApiServer(config)

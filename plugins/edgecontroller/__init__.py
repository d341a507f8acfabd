"""The ``edgecontroller`` module: pods, configmaps, secrets, services and endpoints down to edge nodes
through cloudhub; node status, pod status and node leases up to the Kubernetes API (embedded or real).
``kube.py`` is a public helper (the kubernetes client from trio: worker-thread calls, informers).
"""

from __future__ import annotations

from typing import Any

from kubeedge import hookimpl

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "kubeconfig": {"type": "string", "description": "default: <data-dir>/kubeconfig.yaml (the embedded API's)"},
        "nodeGracePeriod": {"type": "number", "exclusiveMinimum": 0, "description": "silence before NotReady (s)"},
        "leaseRenewInterval": {"type": "number", "exclusiveMinimum": 0},
        "leaseDurationSeconds": {"type": "integer", "minimum": 1},
    },
}


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    return CONFIG_SCHEMA


@hookimpl
def kubeedge_module(config: dict[str, Any]) -> Any:
    from .controller import EdgeController

    return EdgeController(config)

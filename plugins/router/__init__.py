"""The ``router`` plugin: KubeEdge's cloud router (Rule/RuleEndpoint, REST :9443); see :mod:`.module`.

Rules come from this section (``rules``, ``ruleEndpoints``: objects shaped like the ``rules.kubeedge.io/v1``
CRDs) or, with ``rulesFrom: api``, from the Kubernetes API, through :class:`~.rules.RuleSource`.
"""

from __future__ import annotations

from typing import Any

from kubeedge import hookimpl

_OBJECT = {"type": "object", "required": ["metadata", "spec"], "properties": {"metadata": {"type": "object"}}}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "enable": {"type": "boolean"},
        "address": {"type": "string", "description": "REST listen address (default 0.0.0.0)"},
        "port": {"type": "integer", "minimum": 0, "maximum": 65535, "description": "default 9443; 0 picks one"},
        "restTimeout": {"type": "number", "exclusiveMinimum": 0},
        "resyncInterval": {"type": "number", "exclusiveMinimum": 0},
        "maxConcurrent": {"type": "integer", "minimum": 1},
        "rulesFrom": {
            "enum": ["config", "api"],
            "description": "config: the rules/ruleEndpoints below; api: Rule/RuleEndpoint objects in the API",
        },
        "kubeconfig": {"type": "string", "description": "with rulesFrom: api (default: the embedded apiserver's)"},
        "statusInterval": {"type": "number", "exclusiveMinimum": 0, "description": "seconds between status writes"},
        "rules": {"type": "array", "items": _OBJECT},
        "ruleEndpoints": {"type": "array", "items": _OBJECT},
    },
}


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    return SCHEMA


@hookimpl
def kubeedge_module(config: dict[str, Any]) -> Any:
    from .module import Router

    return Router(config)

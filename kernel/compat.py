"""KubeEdge's own ``edgecore.yaml`` / ``cloudcore.yaml``, translated into a profile.

Modules with ``enable: true`` become profile modules under this project's names; the settings users
change most carry over under the module's own keys (listed in ``_KEYS``). Everything else in KubeEdge's
file has no counterpart here and is ignored.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

__all__ = ["is_kubeedge_config", "translate"]

EDGECORE = "edgecore.config.kubeedge.io/"
CLOUDCORE = "cloudcore.config.kubeedge.io/"

_NAMES = {
    # edgecore
    "edged": "edged",
    "edgeHub": "edgehub",
    "eventBus": "eventbus",
    "metaManager": "metamanager",
    "deviceTwin": "twin",
    "serviceBus": "servicebus",
    "edgeStream": "edgestream",
    # cloudcore
    "cloudHub": "cloudhub",
    "edgeController": "edgecontroller",
    "deviceController": "devicecontroller",
    "syncController": "synccontroller",
    "cloudStream": "cloudstream",
    "router": "router",
}

# (KubeEdge key path inside the module, our key in the module's section)
_KEYS: dict[str, list[tuple[str, str]]] = {
    "edgehub": [
        ("heartbeat", "heartbeat"),
        ("websocket.server", "server"),
        ("httpServer", "httpServer"),
        ("token", "token"),
        ("projectID", "projectID"),
    ],
    "eventbus": [
        ("mqttMode", "mqttMode"),
        ("mqttServerInternal", "mqttServerInternal"),
        ("mqttServerExternal", "mqttServerExternal"),
        ("mqttQOS", "mqttQOS"),
        ("mqttRetain", "mqttRetain"),
    ],
    "servicebus": [("port", "port")],
    "cloudhub": [
        ("advertiseAddress", "advertiseAddress"),
        ("nodeLimit", "nodeLimit"),
        ("keepaliveInterval", "keepaliveInterval"),
        ("websocket.port", "port"),
        ("https.port", "httpsPort"),
    ],
    "router": [("port", "port"), ("restTimeout", "restTimeout")],
}


def is_kubeedge_config(data: dict[str, Any]) -> bool:
    api_version = str(data.get("apiVersion", ""))
    return api_version.startswith((EDGECORE, CLOUDCORE))


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def translate(data: dict[str, Any]) -> dict[str, Any]:
    cloud = str(data.get("apiVersion", "")).startswith(CLOUDCORE)
    profile: dict[str, Any] = {"role": "cloud" if cloud else "edge", "modules": {}}
    kube_modules = data.get("modules") or {}
    for kube_name, name in _NAMES.items():  # KubeEdge's own module order, whatever the file's key order
        section = kube_modules.get(kube_name)
        if not isinstance(section, dict) or not section.get("enable"):
            continue
        config: dict[str, Any] = {}
        for kube_key, our_key in _KEYS.get(name, []):
            value = _get(section, kube_key)
            if value not in (None, ""):
                config[our_key] = value
        profile["modules"][name] = config
    if cloud:
        kubeconfig = _get(data, "kubeAPIConfig.kubeConfig")
        if kubeconfig:
            for name in ("edgecontroller", "devicecontroller", "synccontroller"):
                if name in profile["modules"]:
                    profile["modules"][name]["kubeconfig"] = kubeconfig
        else:
            # No cluster named: the embedded control plane stands in for one.
            profile["modules"] = {"apiserver": {}, **profile["modules"]}
        profile["node"] = {"name": "cloud"}
    else:
        if _get(kube_modules, "metaManager.metaServer.enable"):
            server = str(_get(kube_modules, "metaManager.metaServer.server") or "127.0.0.1:10550")
            host, _, port = server.rpartition(":")
            profile["modules"]["metaserver"] = {"address": host or "127.0.0.1", "port": int(port or 10550)}
        hostname = _get(kube_modules, "edged.hostnameOverride")
        if hostname:
            profile["node"] = {"name": str(hostname).lower()}
    source = _get(data, "database.dataSource")
    if source:
        profile["dataDir"] = str(PurePosixPath(source).parent)
    return profile

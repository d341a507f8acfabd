"""``meta.k8s.io/v1`` Table output: the columns ``kubectl get`` prints, computed server-side (pure functions)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from functools import partial
from typing import Any

from .resources import ResourceType
from .selectors import field_value

__all__ = ["age", "to_table"]

Column = tuple[str, str, int, Callable[[dict[str, Any]], Any]]  # name, type, priority, cell


def age(timestamp: str | None, now: dt.datetime | None = None) -> str:
    """Kubernetes' short human duration: ``5s``, ``3m12s``, ``2d4h``."""
    if not timestamp:
        return "<unknown>"
    try:
        then = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    seconds = int(((now or dt.datetime.now(dt.UTC)) - then).total_seconds())
    seconds = max(seconds, 0)
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h{minutes % 60}m" if hours < 8 and minutes % 60 else f"{hours}h"
    days = hours // 24
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y"


def _age_at(path: str, obj: dict[str, Any]) -> str:
    return age(field_value(obj, path) or None)


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _name(obj: dict[str, Any]) -> str:
    return str(_meta(obj).get("name", ""))


def _age(obj: dict[str, Any]) -> str:
    return age(_meta(obj).get("creationTimestamp"))


def _pod_ready(obj: dict[str, Any]) -> str:
    containers = (obj.get("spec") or {}).get("containers") or []
    statuses = (obj.get("status") or {}).get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    return f"{ready}/{len(containers)}"


def _pod_status(obj: dict[str, Any]) -> str:
    if _meta(obj).get("deletionTimestamp"):
        return "Terminating"
    status = obj.get("status") or {}
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason"):
            return str(waiting["reason"])
        terminated = state.get("terminated") or {}
        if terminated.get("reason") and status.get("phase") not in ("Running",):
            return str(terminated["reason"])
    return str(status.get("reason") or status.get("phase") or "Pending")


def _restarts(obj: dict[str, Any]) -> int:
    return sum(int(s.get("restartCount") or 0) for s in (obj.get("status") or {}).get("containerStatuses") or [])


def _node_status(obj: dict[str, Any]) -> str:
    conditions = (obj.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    text = "Ready" if ready and ready.get("status") == "True" else ("NotReady" if ready else "Unknown")
    if (obj.get("spec") or {}).get("unschedulable"):
        text += ",SchedulingDisabled"
    return text


def _roles(obj: dict[str, Any]) -> str:
    labels = _meta(obj).get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    return ",".join(roles) or "<none>"


def _address(kind: str) -> Callable[[dict[str, Any]], str]:
    def cell(obj: dict[str, Any]) -> str:
        for address in (obj.get("status") or {}).get("addresses") or []:
            if address.get("type") == kind:
                return str(address.get("address", ""))
        return "<none>"

    return cell


def _path(path: str, default: str = "<none>") -> Callable[[dict[str, Any]], str]:
    def cell(obj: dict[str, Any]) -> str:
        return field_value(obj, path) or default

    return cell


def _count(section: str) -> Callable[[dict[str, Any]], int]:
    return lambda obj: len(obj.get(section) or {}) + (len(obj.get("binaryData") or {}) if section == "data" else 0)


def _deploy_ready(obj: dict[str, Any]) -> str:
    status = obj.get("status") or {}
    return f"{status.get('readyReplicas', 0)}/{(obj.get('spec') or {}).get('replicas', 1)}"


def _ports(obj: dict[str, Any]) -> str:
    ports = (obj.get("spec") or {}).get("ports") or []
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ports) or "<none>"


def _images(obj: dict[str, Any]) -> str:
    containers = (((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    return ",".join(str(c.get("image", "")) for c in containers)


COLUMNS: dict[str, list[Column]] = {
    "/pods": [
        ("Name", "string", 0, _name),
        ("Ready", "string", 0, _pod_ready),
        ("Status", "string", 0, _pod_status),
        ("Restarts", "string", 0, lambda o: str(_restarts(o))),
        ("Age", "string", 0, _age),
        ("IP", "string", 1, _path("status.podIP")),
        ("Node", "string", 1, _path("spec.nodeName")),
        ("Nominated Node", "string", 1, _path("status.nominatedNodeName")),
        ("Readiness Gates", "string", 1, lambda o: "<none>"),
    ],
    "/nodes": [
        ("Name", "string", 0, _name),
        ("Status", "string", 0, _node_status),
        ("Roles", "string", 0, _roles),
        ("Age", "string", 0, _age),
        ("Version", "string", 0, _path("status.nodeInfo.kubeletVersion", "")),
        ("Internal-IP", "string", 1, _address("InternalIP")),
        ("External-IP", "string", 1, _address("ExternalIP")),
        ("OS-Image", "string", 1, _path("status.nodeInfo.osImage", "<unknown>")),
        ("Kernel-Version", "string", 1, _path("status.nodeInfo.kernelVersion", "<unknown>")),
        ("Container-Runtime", "string", 1, _path("status.nodeInfo.containerRuntimeVersion", "<unknown>")),
    ],
    "/events": [
        ("Last Seen", "string", 0, lambda o: age(o.get("lastTimestamp") or o.get("eventTime"))),
        ("Type", "string", 0, _path("type", "")),
        ("Reason", "string", 0, _path("reason", "")),
        (
            "Object",
            "string",
            0,
            lambda o: (
                f"{str((o.get('involvedObject') or {}).get('kind', '')).lower()}/"
                f"{(o.get('involvedObject') or {}).get('name', '')}"
            ),
        ),
        ("Message", "string", 0, _path("message", "")),
    ],
    "/namespaces": [
        ("Name", "string", 0, _name),
        ("Status", "string", 0, _path("status.phase", "Active")),
        ("Age", "string", 0, _age),
    ],
    "/configmaps": [("Name", "string", 0, _name), ("Data", "integer", 0, _count("data")), ("Age", "string", 0, _age)],
    "/secrets": [
        ("Name", "string", 0, _name),
        ("Type", "string", 0, _path("type", "Opaque")),
        ("Data", "integer", 0, _count("data")),
        ("Age", "string", 0, _age),
    ],
    "/services": [
        ("Name", "string", 0, _name),
        ("Type", "string", 0, _path("spec.type", "ClusterIP")),
        ("Cluster-IP", "string", 0, _path("spec.clusterIP")),
        ("External-IP", "string", 0, lambda o: "<none>"),
        ("Port(s)", "string", 0, _ports),
        ("Age", "string", 0, _age),
    ],
    "apps/deployments": [
        ("Name", "string", 0, _name),
        ("Ready", "string", 0, _deploy_ready),
        ("Up-to-date", "integer", 0, lambda o: (o.get("status") or {}).get("updatedReplicas", 0)),
        ("Available", "integer", 0, lambda o: (o.get("status") or {}).get("availableReplicas", 0)),
        ("Age", "string", 0, _age),
        (
            "Containers",
            "string",
            1,
            lambda o: ",".join(
                str(c.get("name"))
                for c in ((o.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
            ),
        ),
        ("Images", "string", 1, _images),
    ],
    "devices.kubeedge.io/devices": [
        ("Name", "string", 0, _name),
        ("Model", "string", 0, _path("spec.deviceModelRef.name")),
        ("Node", "string", 0, _path("spec.nodeName")),
        ("State", "string", 0, _path("status.state", "unknown")),
        ("Age", "string", 0, _age),
    ],
    "devices.kubeedge.io/devicemodels": [
        ("Name", "string", 0, _name),
        ("Protocol", "string", 0, _path("spec.protocol")),
        ("Age", "string", 0, _age),
    ],
}


def _columns(rtype: ResourceType, version: str) -> list[Column]:
    if rtype.key in COLUMNS:
        return COLUMNS[rtype.key]
    printer = rtype.printer_columns.get(version) or []
    if printer:
        columns: list[Column] = [("Name", "string", 0, _name)]
        for column in printer:
            json_path = str(column.get("jsonPath", "")).lstrip(".")
            if column.get("type") == "date":
                columns.append(
                    (
                        column["name"],
                        "string",
                        int(column.get("priority", 0)),
                        partial(_age_at, json_path),
                    )
                )
            else:
                columns.append(
                    (
                        column["name"],
                        str(column.get("type", "string")),
                        int(column.get("priority", 0)),
                        _path(json_path, ""),
                    )
                )
        if not any(c.get("jsonPath") == ".metadata.creationTimestamp" for c in printer):
            columns.append(("Age", "string", 0, _age))
        return columns
    return [("Name", "string", 0, _name), ("Age", "string", 0, _age)]


def to_table(
    rtype: ResourceType,
    version: str,
    objects: list[dict[str, Any]],
    *,
    resource_version: str,
    include: str = "Metadata",
    continue_token: str = "",
) -> dict[str, Any]:
    """A ``Table`` of ``objects``; ``include`` is the ``includeObject`` query (None, Metadata, Object)."""
    columns = _columns(rtype, version)
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": [cell(obj) for _, _, _, cell in columns]}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata") or {},
            }
        rows.append(row)
    metadata: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": [
            {
                "name": name,
                "type": kind,
                "format": "name" if name == "Name" else "",
                "description": name,
                "priority": priority,
            }
            for name, kind, priority, _ in columns
        ],
        "rows": rows,
    }

"""The resource types the embedded API serves: built-in core/apps/coordination types and the KubeEdge CRDs.

A :class:`ResourceType` is one plural under one API group, served in one or more versions and stored
once: the storage key is ``<group>/<plural>``, whatever version a client used (the versions of the KubeEdge
CRDs share one shape where they overlap; there is no conversion, as with ``conversion: None``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources as importlib_resources
from typing import Any

import yaml

__all__ = ["BUILTIN", "Registry", "ResourceType", "load_crds"]

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    group: str
    versions: tuple[str, ...]
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False, compare=False)
    printer_columns: dict[str, list[dict[str, Any]]] = field(default_factory=dict, hash=False, compare=False)
    builtin: bool = True
    verbs: tuple[str, ...] = ALL_VERBS

    @property
    def key(self) -> str:
        """The storage key: group and plural, no version."""
        return f"{self.group}/{self.plural}"

    @property
    def group_resource(self) -> str:
        """``pods`` or ``devices.devices.kubeedge.io``, as Kubernetes names it in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    @property
    def storage_version(self) -> str:
        return self.versions[-1]


def _core(kind: str, plural: str, namespaced: bool = True, short: tuple[str, ...] = (), sub: tuple[str, ...] = ()):
    return ResourceType(
        "",
        ("v1",),
        kind,
        plural,
        kind.lower(),
        namespaced,
        short,
        ("all",) if kind in ("Pod", "Service") else (),
        frozenset(sub),
    )


BUILTIN: tuple[ResourceType, ...] = (
    _core("Namespace", "namespaces", False, ("ns",), ("status",)),
    _core("Node", "nodes", False, ("no",), ("status",)),
    _core("Pod", "pods", True, ("po",), ("status", "binding", "log", "exec", "attach")),
    _core("ConfigMap", "configmaps", True, ("cm",)),
    _core("Secret", "secrets", True),
    _core("Service", "services", True, ("svc",), ("status",)),
    _core("Endpoints", "endpoints", True, ("ep",)),
    _core("Event", "events", True, ("ev",)),
    _core("ServiceAccount", "serviceaccounts", True, ("sa",)),
    ResourceType(
        "apps",
        ("v1",),
        "Deployment",
        "deployments",
        "deployment",
        True,
        ("deploy",),
        ("all",),
        frozenset({"status", "scale"}),
    ),
    ResourceType(
        "apps", ("v1",), "ReplicaSet", "replicasets", "replicaset", True, ("rs",), ("all",), frozenset({"status"})
    ),
    ResourceType("coordination.k8s.io", ("v1",), "Lease", "leases", "lease", True),
    # the resource metrics API (`kubectl top`), served from the nodes' stats by metricsapi.py, never stored
    ResourceType("metrics.k8s.io", ("v1beta1",), "NodeMetrics", "nodes", "", False, verbs=("get", "list")),
    ResourceType("metrics.k8s.io", ("v1beta1",), "PodMetrics", "pods", "", True, verbs=("get", "list")),
)


def _crd_to_type(crd: dict[str, Any]) -> ResourceType:
    spec = crd["spec"]
    names = spec["names"]
    served = [v for v in spec["versions"] if v.get("served", True)]
    # Storage version last: it is the preferred version in discovery.
    served.sort(key=lambda v: bool(v.get("storage")))
    subresources: set[str] = set()
    for version in served:
        subresources.update((version.get("subresources") or {}).keys())
    return ResourceType(
        group=spec["group"],
        versions=tuple(v["name"] for v in served),
        kind=names["kind"],
        plural=names["plural"],
        singular=names.get("singular") or names["kind"].lower(),
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        short_names=tuple(names.get("shortNames") or ()),
        categories=tuple(names.get("categories") or ()),
        subresources=frozenset(subresources),
        schemas={v["name"]: (v.get("schema") or {}).get("openAPIV3Schema") or {} for v in served},
        printer_columns={v["name"]: list(v.get("additionalPrinterColumns") or []) for v in served},
        builtin=False,
    )


def load_crds() -> list[dict[str, Any]]:
    """The CustomResourceDefinitions shipped with this plugin (package data in ``crds/``)."""
    root = importlib_resources.files("kubeedge.plugins.apiserver").joinpath("crds")
    crds = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            for doc in yaml.safe_load_all(entry.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    crds.append(doc)
    return crds


class Registry:
    """Lookup of resource types by group/version/plural, and the discovery documents built from them."""

    def __init__(self, types: list[ResourceType]) -> None:
        self.types = types
        self._by_gvr: dict[tuple[str, str, str], ResourceType] = {}
        self._by_key: dict[str, ResourceType] = {}
        for rtype in types:
            self._by_key[rtype.key] = rtype
            for version in rtype.versions:
                self._by_gvr[(rtype.group, version, rtype.plural)] = rtype

    @classmethod
    def default(cls) -> Registry:
        return cls([*BUILTIN, *(_crd_to_type(crd) for crd in load_crds())])

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_gvr.get((group, version, plural))

    def by_key(self, key: str) -> ResourceType:
        return self._by_key[key]

    def groups(self) -> dict[str, list[str]]:
        """Group -> served versions, preferred (storage) version first; the core group is ``""``."""
        found: dict[str, list[str]] = {}
        for rtype in self.types:
            versions = found.setdefault(rtype.group, [])
            for version in reversed(rtype.versions):
                if version not in versions:
                    versions.append(version)
        return found

    def resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        resources: list[dict[str, Any]] = []
        for rtype in self.types:
            if rtype.group != group or version not in rtype.versions:
                continue
            entry: dict[str, Any] = {
                "name": rtype.plural,
                "singularName": rtype.singular,
                "namespaced": rtype.namespaced,
                "kind": rtype.kind,
                "verbs": list(rtype.verbs),
            }
            if rtype.short_names:
                entry["shortNames"] = list(rtype.short_names)
            if rtype.categories:
                entry["categories"] = list(rtype.categories)
            resources.append(entry)
            for sub in sorted(rtype.subresources):
                if sub == "binding":
                    resources.append(
                        {
                            "name": f"{rtype.plural}/binding",
                            "singularName": "",
                            "namespaced": True,
                            "kind": "Binding",
                            "verbs": ["create"],
                        }
                    )
                elif sub in ("log", "exec", "attach"):
                    verbs = ["get"] if sub == "log" else ["create", "get"]
                    kind = "Pod" if sub == "log" else "PodExecOptions" if sub == "exec" else "PodAttachOptions"
                    resources.append(
                        {
                            "name": f"{rtype.plural}/{sub}",
                            "singularName": "",
                            "namespaced": True,
                            "kind": kind,
                            "verbs": verbs,
                        }
                    )
                elif sub == "scale":
                    resources.append(
                        {
                            "name": f"{rtype.plural}/scale",
                            "singularName": "",
                            "namespaced": rtype.namespaced,
                            "group": "autoscaling",
                            "version": "v1",
                            "kind": "Scale",
                            "verbs": ["get", "patch", "update"],
                        }
                    )
                else:
                    resources.append(
                        {
                            "name": f"{rtype.plural}/{sub}",
                            "singularName": "",
                            "namespaced": rtype.namespaced,
                            "kind": rtype.kind,
                            "verbs": ["get", "patch", "update"],
                        }
                    )
        if not resources:
            return None
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

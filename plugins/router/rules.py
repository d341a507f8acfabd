"""Rules and rule endpoints (``rules.kubeedge.io/v1``) as the router uses them, and where they come from.

:class:`RuleSource` is the small interface the router reads rules through; :class:`ConfigRuleSource` takes
them from the router's profile section today (objects shaped like the CRDs: ``metadata`` + ``spec``), and an
API-backed source can replace it without touching the router. Status counts are kept per rule and handed
back to the source (``record``), which may write them to ``Rule.status``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "ApiRuleSource",
    "ConfigRuleSource",
    "Rule",
    "RuleEndpoint",
    "RuleSource",
    "RuleStatus",
    "path_matches",
    "topic_matches",
]

ENDPOINT_TYPES = ("rest", "eventbus", "servicebus")


@dataclass(frozen=True)
class RuleEndpoint:
    name: str
    namespace: str
    type: str
    properties: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    name: str
    namespace: str
    source: str
    source_resource: dict[str, str]
    target: str
    target_resource: dict[str, str]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class RuleStatus:
    """``Rule.status``: successMessages, failMessages and the last errors (at most 10, as KubeEdge keeps)."""

    success_messages: int = 0
    fail_messages: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "successMessages": self.success_messages,
            "failMessages": self.fail_messages,
            "errors": list(self.errors),
        }

    def count(self, ok: bool, error: str = "") -> None:
        if ok:
            self.success_messages += 1
            return
        self.fail_messages += 1
        if error:
            self.errors.append(error)
            del self.errors[:-10]


class RuleSource(Protocol):
    """Where the router reads rules from."""

    def endpoints(self) -> dict[tuple[str, str], RuleEndpoint]:
        """Rule endpoints by (namespace, name)."""
        ...

    def rules(self) -> list[Rule]: ...

    def record(self, rule: Rule, status: RuleStatus) -> None:
        """Called after each message a rule moved (or failed to move) with the rule's current status."""
        ...


def _meta(obj: dict[str, Any], what: str) -> tuple[str, str, dict[str, Any]]:
    if not isinstance(obj, dict):
        raise ValueError(f"{what}: expected an object, got {obj!r:.100}")
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what}: metadata.name is required")
    if not isinstance(spec, dict):
        raise ValueError(f"{what} {name}: spec must be an object")
    return name, str(meta.get("namespace") or "default"), spec


def parse_endpoint(obj: dict[str, Any]) -> RuleEndpoint:
    name, namespace, spec = _meta(obj, "RuleEndpoint")
    kind = spec.get("ruleEndpointType")
    if kind not in ENDPOINT_TYPES:
        raise ValueError(
            f"RuleEndpoint {namespace}/{name}: ruleEndpointType must be one of {', '.join(ENDPOINT_TYPES)}"
        )
    properties = {str(k): str(v) for k, v in (spec.get("properties") or {}).items()}
    if kind == "servicebus" and not properties.get("service_port", "").isdigit():
        raise ValueError(f"RuleEndpoint {namespace}/{name}: servicebus needs properties.service_port")
    return RuleEndpoint(name, namespace, kind, properties)


def parse_rule(obj: dict[str, Any]) -> Rule:
    name, namespace, spec = _meta(obj, "Rule")
    for key in ("source", "target"):
        if not isinstance(spec.get(key), str) or not spec[key]:
            raise ValueError(f"Rule {namespace}/{name}: spec.{key} (a RuleEndpoint name) is required")
    resources = {}
    for key in ("sourceResource", "targetResource"):
        value = spec.get(key) or {}
        if not isinstance(value, dict):
            raise ValueError(f"Rule {namespace}/{name}: spec.{key} must be an object")
        resources[key] = {str(k): str(v) for k, v in value.items()}
    return Rule(
        name, namespace, spec["source"], resources["sourceResource"], spec["target"], resources["targetResource"]
    )


class ConfigRuleSource:
    """Rules and endpoints listed in the router's config (``rules``, ``ruleEndpoints``)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._endpoints = {}
        for obj in config.get("ruleEndpoints") or []:
            endpoint = parse_endpoint(obj)
            self._endpoints[(endpoint.namespace, endpoint.name)] = endpoint
        self._rules = [parse_rule(obj) for obj in config.get("rules") or []]
        for rule in self._rules:
            for which in (rule.source, rule.target):
                if (rule.namespace, which) not in self._endpoints:
                    raise ValueError(f"Rule {rule.key}: no RuleEndpoint {rule.namespace}/{which}")
        self.statuses: dict[str, dict[str, Any]] = {}

    def endpoints(self) -> dict[tuple[str, str], RuleEndpoint]:
        return self._endpoints

    def rules(self) -> list[Rule]:
        return self._rules

    def record(self, rule: Rule, status: RuleStatus) -> None:
        self.statuses[rule.key] = status.to_dict()


def path_matches(pattern: str, path: str) -> bool:
    """A rule's REST path against a request path; ``{anything}`` matches one segment."""
    want = [p for p in pattern.strip("/").split("/")]
    got = [p for p in path.strip("/").split("/")]
    if len(want) != len(got):
        return False
    return all(w == g or (w.startswith("{") and w.endswith("}")) for w, g in zip(want, got, strict=True))


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT matching of a rule's topic (``+`` one level, ``#`` the rest) against a published topic."""
    if topic.startswith("$") and topic_filter[:1] in {"+", "#"}:
        return False
    want, got = topic_filter.split("/"), topic.split("/")
    for index, level in enumerate(want):
        if level == "#":
            return True
        if index >= len(got) or (level != "+" and level != got[index]):
            return False
    return len(want) == len(got)


class ApiRuleSource:
    """Rules and RuleEndpoints listed and watched from the Kubernetes API (``rules.kubeedge.io/v1``).

    Objects that do not parse are skipped with a warning naming them. Status counts are written to the
    ``status`` subresource of each Rule, coalesced to at most one write per rule per ``status_interval``.
    """

    GROUP, VERSION = "rules.kubeedge.io", "v1"

    def __init__(self, kubeconfig: Any, *, status_interval: float = 1.0) -> None:
        self.kubeconfig = kubeconfig
        self.status_interval = status_interval
        self._endpoints: dict[tuple[str, str], RuleEndpoint] = {}
        self._rules: list[Rule] = []
        self._pending: dict[tuple[str, str], dict[str, Any]] = {}
        self._rule_informer: Any = None
        self._endpoint_informer: Any = None
        self.status_writes = 0
        self._status_subresource = False
        self.changed: Any = None  # a trio.Event, set and replaced whenever rules or endpoints change

    def endpoints(self) -> dict[tuple[str, str], RuleEndpoint]:
        return self._endpoints

    def rules(self) -> list[Rule]:
        return self._rules

    def record(self, rule: Rule, status: RuleStatus) -> None:
        self._pending[(rule.namespace, rule.name)] = status.to_dict()

    async def run(self, *, task_status: Any) -> None:
        import trio

        from kubeedge.plugins.common.kube import Informer, Kube

        self.changed = trio.Event()
        kube = await trio.to_thread.run_sync(Kube, self.kubeconfig)
        custom = kube.custom
        self._endpoint_informer = Informer(
            kube, custom.list_cluster_custom_object, self.GROUP, self.VERSION, "ruleendpoints", name="router endpoints"
        )
        self._rule_informer = Informer(
            kube, custom.list_cluster_custom_object, self.GROUP, self.VERSION, "rules", name="router rules"
        )
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._endpoint_informer.run, self._changed)
                await nursery.start(self._rule_informer.run, self._changed)
                self._status_subresource = await self._has_status_subresource(kube)
                self._rebuild()
                task_status.started()
                while True:
                    await trio.sleep(self.status_interval)
                    await self._write_statuses(kube)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(kube.close)

    async def _has_status_subresource(self, kube: Any) -> bool:
        from kubernetes import client

        try:
            crd = await kube.call(
                client.ApiextensionsV1Api(kube.api_client).read_custom_resource_definition, f"rules.{self.GROUP}"
            )
        except Exception:
            return False
        versions = (crd or {}).get("spec", {}).get("versions") or []
        return any("status" in (v.get("subresources") or {}) for v in versions if v.get("name") == self.VERSION)

    async def _changed(self, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        self._rebuild()

    def _rebuild(self) -> None:
        import logging

        log = logging.getLogger("kubeedge.router")
        endpoints: dict[tuple[str, str], RuleEndpoint] = {}
        for obj in self._endpoint_informer.items() if self._endpoint_informer else []:
            try:
                endpoint = parse_endpoint(obj)
            except ValueError as exc:
                log.warning("router: skipping %s", exc)
                continue
            endpoints[(endpoint.namespace, endpoint.name)] = endpoint
        rules: list[Rule] = []
        for obj in self._rule_informer.items() if self._rule_informer else []:
            try:
                rule = parse_rule(obj)
            except ValueError as exc:
                log.warning("router: skipping %s", exc)
                continue
            missing = [n for n in (rule.source, rule.target) if (rule.namespace, n) not in endpoints]
            if missing:
                log.warning("router: rule %s names unknown RuleEndpoint(s) %s", rule.key, ", ".join(missing))
                continue
            rules.append(rule)
        self._endpoints, self._rules = endpoints, rules
        if self.changed is not None:
            import trio

            self.changed.set()
            self.changed = trio.Event()

    async def _write_statuses(self, kube: Any) -> None:
        import logging

        pending, self._pending = self._pending, {}
        for (namespace, name), status in pending.items():
            # KubeEdge's Rule CRD has no status subresource: the status is patched on the object itself;
            # a CRD that declares one gets it through /status.
            patch = kube.custom.patch_namespaced_custom_object
            if self._status_subresource:
                patch = kube.custom.patch_namespaced_custom_object_status
            try:
                await kube.call(patch, self.GROUP, self.VERSION, namespace, "rules", name, {"status": status})
                self.status_writes += 1
            except Exception as exc:
                logging.getLogger("kubeedge.router").warning(
                    "router: writing status of rule %s/%s failed: %s", namespace, name, exc
                )

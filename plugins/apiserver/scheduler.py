"""The embedded control plane's controllers: a scheduler and a deployment controller.

Only active with the embedded ``apiserver`` (on a real cluster, kube-scheduler and the controller
manager do this). They work in-process on the store, through the same :class:`ApiService` as HTTP
clients, so their writes are validated, versioned and watched like anyone's.

- Scheduler: a pod without ``spec.nodeName`` goes to a Ready node labelled
  ``node-role.kubernetes.io/edge`` that matches its ``nodeSelector`` (and simple required node
  affinity), is schedulable and has no untolerated ``NoSchedule`` taint; the least loaded wins. A pod
  that fits nowhere gets ``PodScheduled=False/Unschedulable`` and is retried when nodes change.
- Deployment controller: keeps ``spec.replicas`` pods of the current template (named
  ``<deployment>-<template hash>-<suffix>``, owned by the Deployment), replaces pods of an older
  template, and writes the Deployment's status.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import uuid
from typing import Any

import trio

from .service import ApiError, ApiService, now_rfc3339
from .store import Event

__all__ = ["DeploymentController", "Scheduler", "run_controllers"]

log = logging.getLogger("kubeedge.apiserver.scheduler")

EDGE_ROLE = "node-role.kubernetes.io/edge"
SAFE = "bcdfghjklmnpqrstvwxz2456789"


def template_hash(template: dict[str, Any]) -> str:
    digest = int.from_bytes(hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()[:8], "big")
    text = ""
    while len(text) < 10:
        digest, rest = divmod(digest, len(SAFE))
        text += SAFE[rest]
    return text


def is_ready(node: dict[str, Any]) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def pod_ready(pod: dict[str, Any]) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def _expression_matches(expression: dict[str, Any], labels: dict[str, str]) -> bool:
    key, operator, values = expression.get("key", ""), expression.get("operator", ""), expression.get("values") or []
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    return False


def fits(pod: dict[str, Any], node: dict[str, Any]) -> bool:
    """Whether ``pod`` may run on ``node``."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    spec = pod.get("spec") or {}
    if EDGE_ROLE not in labels or not is_ready(node) or (node.get("spec") or {}).get("unschedulable"):
        return False
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if terms and not any(
        all(_expression_matches(e, labels) for e in term.get("matchExpressions") or []) for term in terms
    ):
        return False
    tolerations = spec.get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(
            (t.get("operator") == "Exists" and not t.get("key"))
            or (
                t.get("key") == taint.get("key")
                and (t.get("operator") == "Exists" or t.get("value") == taint.get("value"))
                and t.get("effect") in (None, "", taint.get("effect"))
            )
            for t in tolerations
        ):
            return False
    return True


async def record_event(
    service: ApiService, obj: dict[str, Any], reason: str, message: str, component: str, kind: str = "Normal"
) -> None:
    """A core/v1 Event about ``obj``, as kube-scheduler and the controller manager write them (for describe)."""
    meta = obj["metadata"]
    now = now_rfc3339()
    namespace = meta.get("namespace") or "default"
    event: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
            "namespace": meta.get("namespace") or "default",
        },
        "involvedObject": {
            "apiVersion": obj.get("apiVersion", "v1"),
            "kind": obj.get("kind", ""),
            "name": meta["name"],
            "namespace": meta.get("namespace", ""),
            "uid": meta.get("uid", ""),
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        await service.create(service.registry.by_key("/events"), "v1", namespace, event)
    except ApiError as exc:
        log.debug("event %s for %s not recorded: %s", reason, meta["name"], exc)


def _owner_uid(obj: dict[str, Any], kind: str) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == kind and ref.get("controller", True):
            return str(ref.get("uid"))
    return None


class Scheduler:
    def __init__(self, service: ApiService) -> None:
        self.service = service
        self.store = service.store
        self.pods = service.registry.by_key("/pods")

    async def schedule(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        spec = pod.get("spec") or {}
        if spec.get("nodeName") or meta.get("deletionTimestamp"):
            return
        if spec.get("schedulerName", "default-scheduler") != "default-scheduler":
            return
        nodes = [n for n in self.store.list("/nodes") if fits(pod, n)]
        if not nodes:
            await self._unschedulable(pod)
            return
        load: dict[str, int] = {}
        for other in self.store.list("/pods"):
            node_name = (other.get("spec") or {}).get("nodeName")
            if node_name:
                load[node_name] = load.get(node_name, 0) + 1
        chosen = min(nodes, key=lambda n: (load.get(n["metadata"]["name"], 0), n["metadata"]["name"]))
        node_name = chosen["metadata"]["name"]
        try:
            await self.service.patch(
                self.pods,
                "v1",
                meta["namespace"],
                meta["name"],
                "application/merge-patch+json",
                {"spec": {"nodeName": node_name}},
            )
            current = self.store.get("/pods", meta["namespace"], meta["name"])
            if current is not None:
                await self._set_condition(current, "True", "", "")
        except ApiError as exc:
            if exc.code != 404:
                log.warning(
                    "scheduler: binding pod %s/%s to %s failed: %s", meta["namespace"], meta["name"], node_name, exc
                )
            return
        log.info("scheduler: pod %s/%s -> node %s", meta["namespace"], meta["name"], node_name)
        await record_event(
            self.service,
            pod,
            "Scheduled",
            f"Successfully assigned {meta['namespace']}/{meta['name']} to {node_name}",
            "default-scheduler",
        )

    async def _unschedulable(self, pod: dict[str, Any]) -> None:
        await self._set_condition(
            pod,
            "False",
            "Unschedulable",
            f"0/{self.store.count('/nodes')} nodes are available: no Ready edge node matches the pod's node selector",
        )

    async def _set_condition(self, pod: dict[str, Any], status: str, reason: str, message: str) -> None:
        conditions = list((pod.get("status") or {}).get("conditions") or [])
        current = next((c for c in conditions if c.get("type") == "PodScheduled"), None)
        if current and current.get("status") == status and current.get("reason", "") == reason:
            return
        condition = {"type": "PodScheduled", "status": status, "lastTransitionTime": now_rfc3339()}
        if reason:
            condition["reason"] = reason
            condition["message"] = message
        conditions = [c for c in conditions if c.get("type") != "PodScheduled"] + [condition]
        if reason:
            await record_event(self.service, pod, "FailedScheduling", message, "default-scheduler", "Warning")
        meta = pod["metadata"]
        try:
            await self.service.patch(
                self.pods,
                "v1",
                meta["namespace"],
                meta["name"],
                "application/merge-patch+json",
                {"status": {"conditions": conditions}},
                subresource="status",
            )
        except ApiError as exc:
            if exc.code != 404:
                raise

    async def retry_pending(self) -> None:
        for pod in self.store.list("/pods"):
            if not (pod.get("spec") or {}).get("nodeName"):
                await self.schedule(pod)


class DeploymentController:
    def __init__(self, service: ApiService) -> None:
        self.service = service
        self.store = service.store
        self.pods = service.registry.by_key("/pods")
        self.deployments = service.registry.by_key("apps/deployments")

    def owned_pods(self, deployment: dict[str, Any]) -> list[dict[str, Any]]:
        uid = deployment["metadata"]["uid"]
        return [
            p
            for p in self.store.list("/pods", deployment["metadata"]["namespace"])
            if _owner_uid(p, "Deployment") == uid
        ]

    async def sync(self, namespace: str, name: str) -> None:
        deployment = self.store.get("apps/deployments", namespace, name)
        if deployment is None or deployment["metadata"].get("deletionTimestamp"):
            return
        spec = deployment.get("spec") or {}
        template = spec.get("template") or {}
        wanted = int(spec.get("replicas", 1))
        current_hash = template_hash(template)
        live = [
            p
            for p in self.owned_pods(deployment)
            if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Failed", "Succeeded")
        ]
        stale = [p for p in live if (p["metadata"].get("labels") or {}).get("pod-template-hash") != current_hash]
        fresh = [p for p in live if p not in stale]
        for pod in stale:
            await self._delete(pod)
        for pod in self.owned_pods(deployment):
            if (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
                await self._delete(pod)
        if len(fresh) < wanted:
            for _ in range(wanted - len(fresh)):
                await self._create(deployment, template, current_hash)
        elif len(fresh) > wanted:
            # Unscheduled and unready pods go first, then the newest.
            ranked = sorted(
                fresh,
                key=lambda p: (
                    bool((p.get("spec") or {}).get("nodeName")),
                    pod_ready(p),
                    p["metadata"].get("creationTimestamp", ""),
                ),
            )
            for pod in ranked[: len(fresh) - wanted]:
                await self._delete(pod)
        await self._write_status(namespace, name, current_hash)

    async def _create(self, deployment: dict[str, Any], template: dict[str, Any], current_hash: str) -> None:
        meta = deployment["metadata"]
        pod_meta = copy.deepcopy(template.get("metadata") or {})
        pod_meta.pop("name", None)
        pod_meta["generateName"] = f"{meta['name']}-{current_hash}-"
        pod_meta.setdefault("labels", {})["pod-template-hash"] = current_hash
        pod_meta["namespace"] = meta["namespace"]
        pod_meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": pod_meta,
            "spec": copy.deepcopy(template.get("spec") or {}),
        }
        try:
            created, _ = await self.service.create(self.pods, "v1", meta["namespace"], pod)
        except ApiError as exc:
            log.warning("deployment %s/%s: creating a pod failed: %s", meta["namespace"], meta["name"], exc)
            return
        log.info("deployment %s/%s: created pod %s", meta["namespace"], meta["name"], created["metadata"]["name"])
        await record_event(
            self.service,
            deployment,
            "SuccessfulCreate",
            f"Created pod: {created['metadata']['name']}",
            "deployment-controller",
        )

    async def _delete(self, pod: dict[str, Any]) -> None:
        try:
            await self.service.delete(self.pods, pod["metadata"]["namespace"], pod["metadata"]["name"])
        except ApiError as exc:
            if exc.code != 404:
                log.warning("deleting pod %s failed: %s", pod["metadata"]["name"], exc)

    async def _write_status(self, namespace: str, name: str, current_hash: str) -> None:
        deployment = self.store.get("apps/deployments", namespace, name)
        if deployment is None:
            return
        pods = [p for p in self.owned_pods(deployment) if not p["metadata"].get("deletionTimestamp")]
        updated = [p for p in pods if (p["metadata"].get("labels") or {}).get("pod-template-hash") == current_hash]
        ready = [p for p in pods if pod_ready(p)]
        wanted = int((deployment.get("spec") or {}).get("replicas", 1))
        old_status = deployment.get("status") or {}
        available = len(ready) >= wanted
        conditions: list[dict[str, Any]] = []
        for kind, state, reason, message in (
            (
                "Available",
                "True" if available else "False",
                "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "Deployment has minimum availability."
                if available
                else "Deployment does not have minimum availability.",
            ),
            (
                "Progressing",
                "True",
                "NewReplicaSetAvailable" if available else "ReplicaSetUpdated",
                f'Pods of template "{current_hash}" are progressing.',
            ),
        ):
            previous = next((c for c in old_status.get("conditions") or [] if c.get("type") == kind), None)
            stamp = (
                previous.get("lastTransitionTime") if previous and previous.get("status") == state else now_rfc3339()
            )
            conditions.append(
                {
                    "type": kind,
                    "status": state,
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": stamp,
                    "lastUpdateTime": stamp,
                }
            )
        status: dict[str, Any] = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": len(pods),
            "updatedReplicas": len(updated),
            "readyReplicas": len(ready),
            "availableReplicas": len(ready),
            "conditions": conditions,
        }
        if len(pods) > len(ready):
            status["unavailableReplicas"] = len(pods) - len(ready)
        if status == old_status:
            return
        try:
            await self.service.update(
                self.deployments, "v1", namespace, name, {**deployment, "status": status}, subresource="status"
            )
        except ApiError as exc:
            if exc.code not in (404, 409):
                raise


class EndpointsController:
    """Kubernetes' endpoints controller: each Service with a selector gets Endpoints listing the IPs of the pods
    it selects (ready ones under ``addresses``, the others under ``notReadyAddresses``) and their ports."""

    def __init__(self, service: ApiService) -> None:
        self.service = service
        self.store = service.store
        self.endpoints = service.registry.by_key("/endpoints")

    async def sync_namespace(self, namespace: str) -> None:
        for svc in self.store.list("/services", namespace):
            await self.sync(namespace, svc["metadata"]["name"])

    async def sync(self, namespace: str, name: str) -> None:
        svc = self.store.get("/services", namespace, name)
        selector = ((svc or {}).get("spec") or {}).get("selector")
        if svc is None or not selector:
            return  # a Service without a selector has hand-written Endpoints; leave them alone
        ready: list[dict[str, Any]] = []
        not_ready: list[dict[str, Any]] = []
        selected = []
        for pod in self.store.list("/pods", namespace):
            labels = pod["metadata"].get("labels") or {}
            ip = (pod.get("status") or {}).get("podIP")
            if pod["metadata"].get("deletionTimestamp") or not ip:
                continue
            if all(labels.get(k) == v for k, v in selector.items()):
                selected.append(pod)
                address = {
                    "ip": ip,
                    "targetRef": {
                        "kind": "Pod",
                        "namespace": namespace,
                        "name": pod["metadata"]["name"],
                        "uid": pod["metadata"]["uid"],
                    },
                }
                if (pod.get("spec") or {}).get("nodeName"):
                    address["nodeName"] = pod["spec"]["nodeName"]
                (ready if pod_ready(pod) else not_ready).append(address)
        ports = [
            p for p in (_endpoint_port(port, selected) for port in (svc.get("spec") or {}).get("ports") or []) if p
        ]
        subset: dict[str, Any] = {}
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        subsets = [{**subset, "ports": ports}] if subset and ports else []
        existing = self.store.get("/endpoints", namespace, name)
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": name, "namespace": namespace, "labels": svc["metadata"].get("labels") or {}},
            "subsets": subsets,
        }
        try:
            if existing is None:
                await self.service.create(self.endpoints, "v1", namespace, body)
            elif (existing.get("subsets") or []) != subsets:
                body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
                await self.service.update(self.endpoints, "v1", namespace, name, body)
        except ApiError as exc:
            if exc.code != 409:  # a concurrent write: the next event brings the change again
                raise

    async def forget(self, namespace: str, name: str) -> None:
        try:
            await self.service.delete(self.endpoints, namespace, name)
        except ApiError as exc:
            if exc.code != 404:
                raise


def _endpoint_port(port: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A Service port as Endpoints list it: ``targetPort`` resolved (a container port's name becomes its number)."""
    target = port.get("targetPort", port.get("port"))
    if target is None:
        return None
    if isinstance(target, str) and not target.isdigit():
        named = [
            c_port.get("containerPort")
            for pod in pods
            for c in (pod.get("spec") or {}).get("containers") or []
            for c_port in c.get("ports") or []
            if c_port.get("name") == target
        ]
        if not named:
            return None
        target = named[0]
    entry: dict[str, Any] = {"port": int(str(target)), "protocol": port.get("protocol", "TCP")}
    if port.get("name"):
        entry["name"] = port["name"]
    return entry


async def run_controllers(
    service: ApiService, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Reconcile everything once, then follow the store's events for pods, nodes and deployments."""
    scheduler = Scheduler(service)
    deployments = DeploymentController(service)
    endpoints = EndpointsController(service)
    store = service.store
    watched = ["/pods", "/nodes", "apps/deployments", "/services"]
    watcher = store.watch(watched, None, store.rv)
    task_status.started()
    try:
        for deployment in store.list("apps/deployments"):
            await deployments.sync(deployment["metadata"]["namespace"], deployment["metadata"]["name"])
        for svc in store.list("/services"):
            await endpoints.sync(svc["metadata"]["namespace"], svc["metadata"]["name"])
        await scheduler.retry_pending()
        while True:
            try:
                event = await watcher.receive.receive()
            except trio.EndOfChannel:
                # Fell behind and was dropped: start over from the current state.
                watcher = store.watch(watched, None, store.rv)
                for deployment in store.list("apps/deployments"):
                    await deployments.sync(deployment["metadata"]["namespace"], deployment["metadata"]["name"])
                await scheduler.retry_pending()
                continue
            try:
                await _handle(event, scheduler, deployments)
                if event.key == "/services":
                    if event.type == "DELETED":
                        await endpoints.forget(event.namespace, event.name)
                    else:
                        await endpoints.sync(event.namespace, event.name)
                elif event.key == "/pods":
                    await endpoints.sync_namespace(event.namespace)
            except ApiError as exc:
                log.warning("controllers: %s %s/%s: %s", event.type, event.namespace, event.name, exc)
    finally:
        store.unwatch(watcher)


async def _handle(event: Event, scheduler: Scheduler, deployments: DeploymentController) -> None:
    store = scheduler.store
    if event.key == "apps/deployments":
        if event.type != "DELETED":
            await deployments.sync(event.namespace, event.name)
    elif event.key == "/nodes":
        if event.type != "DELETED":
            await scheduler.retry_pending()
    elif event.key == "/pods":
        current = store.get("/pods", event.namespace, event.name)
        if current is not None:
            await scheduler.schedule(current)
        uid = _owner_uid(event.obj, "Deployment")
        if uid is not None:
            for deployment in store.list("apps/deployments", event.namespace):
                if deployment["metadata"].get("uid") == uid:
                    await deployments.sync(event.namespace, deployment["metadata"]["name"])

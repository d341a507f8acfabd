"""The ``edgecontroller`` module: Kubernetes objects down to edge nodes, node and pod status up.

Down (through the ``cloudhub`` module, resource ``node/<node>/<ns>/<type>/<name>`` with the object's
resourceVersion): pods bound to edge nodes (label ``node-role.kubernetes.io/edge``), the configmaps and
secrets those pods reference, and services/endpoints (to every edge node). A node that connects gets
everything it should have again.

Up (from cloudhub): node registration and node status (written with Ready/``EdgeReady``, capacity,
allocatable, addresses, roles ``agent,edge`` and a kubelet version string), pod status, and answers to
the edge's queries. Each connected node's Lease in ``kube-node-lease`` is renewed; a node silent for
longer than the grace period is marked Ready=Unknown (NotReady), and its pods are left alone.

It talks to the API only through the official ``kubernetes`` client (:mod:`.kube`), so it works the
same against the embedded apiserver and a real cluster.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
from functools import partial
from pathlib import Path
from typing import Any

import trio

from kubeedge import BaseModule, Context, Message, __version__
from kubeedge.plugins.common.kube import Informer, Kube, call_with_retry, kubeconfig_path

__all__ = ["EdgeController"]

log = logging.getLogger("kubeedge.edgecontroller")

EDGE_ROLE = "node-role.kubernetes.io/edge"
AGENT_ROLE = "node-role.kubernetes.io/agent"
KUBELET_VERSION = f"v1.32.0-kubeedge-v{__version__}"
MERGE = "application/merge-patch+json"
DEFAULT_CAPACITY = {"cpu": "2", "memory": "2Gi", "pods": "110"}


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def referenced(pod: dict[str, Any]) -> tuple[set[str], set[str]]:
    """Names of the configmaps and secrets a pod uses (volumes, projected volumes, env, envFrom, pull secrets)."""
    configmaps: set[str] = set()
    secrets: set[str] = set()
    spec = pod.get("spec") or {}
    for volume in spec.get("volumes") or []:
        if (volume.get("configMap") or {}).get("name"):
            configmaps.add(volume["configMap"]["name"])
        if (volume.get("secret") or {}).get("secretName"):
            secrets.add(volume["secret"]["secretName"])
        for source in (volume.get("projected") or {}).get("sources") or []:
            if (source.get("configMap") or {}).get("name"):
                configmaps.add(source["configMap"]["name"])
            if (source.get("secret") or {}).get("name"):
                secrets.add(source["secret"]["name"])
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    for container in containers:
        for env in container.get("env") or []:
            source = env.get("valueFrom") or {}
            if (source.get("configMapKeyRef") or {}).get("name"):
                configmaps.add(source["configMapKeyRef"]["name"])
            if (source.get("secretKeyRef") or {}).get("name"):
                secrets.add(source["secretKeyRef"]["name"])
        for env_from in container.get("envFrom") or []:
            if (env_from.get("configMapRef") or {}).get("name"):
                configmaps.add(env_from["configMapRef"]["name"])
            if (env_from.get("secretRef") or {}).get("name"):
                secrets.add(env_from["secretRef"]["name"])
    for pull in spec.get("imagePullSecrets") or []:
        if pull.get("name"):
            secrets.add(pull["name"])
    return configmaps, secrets


def parse_resource(resource: str) -> tuple[str, list[str]]:
    """``node/<node>/<rest...>`` -> (node, rest parts)."""
    parts = resource.split("/")
    if len(parts) < 2 or parts[0] != "node":
        return "", parts
    return parts[1], parts[2:]


class EdgeController(BaseModule):
    name = "edgecontroller"
    group = "edgecontroller"
    after = ("apiserver", "cloudhub")

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.grace = float(self.config.get("nodeGracePeriod", 40.0))
        self.lease_interval = float(self.config.get("leaseRenewInterval", 10.0))
        self.lease_duration = int(self.config.get("leaseDurationSeconds", 40))
        self.kube: Kube | None = None
        self.ctx: Context | None = None
        self.nodes: Informer | None = None
        self.pods: Informer | None = None
        self.configmaps: Informer | None = None
        self.secrets: Informer | None = None
        self.services: Informer | None = None
        self.endpoints: Informer | None = None
        self.connected: set[str] = set()
        self.last_heard: dict[str, float] = {}
        self.sent_pods: dict[tuple[str, str], str] = {}  # pod -> node it was sent to
        self.sent_messages = 0

    # -- plumbing -------------------------------------------------------------------------------------------

    def _kubeconfig(self, ctx: Context) -> Path:
        configured = self.config.get("kubeconfig")
        return kubeconfig_path(configured, ctx.data_dir)

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        self.ctx = ctx
        path = self._kubeconfig(ctx)
        if not path.exists():
            raise FileNotFoundError(f"edgecontroller: no kubeconfig at {path} (set modules.edgecontroller.kubeconfig)")
        kube: Kube = await trio.to_thread.run_sync(Kube, path)
        self.kube = kube
        core = kube.core
        self.nodes = Informer(kube, core.list_node, name="edgecontroller nodes")
        self.pods = Informer(kube, core.list_pod_for_all_namespaces, name="edgecontroller pods")
        self.configmaps = Informer(kube, core.list_config_map_for_all_namespaces, name="edgecontroller configmaps")
        self.secrets = Informer(kube, core.list_secret_for_all_namespaces, name="edgecontroller secrets")
        self.services = Informer(kube, core.list_service_for_all_namespaces, name="edgecontroller services")
        self.endpoints = Informer(kube, core.list_endpoints_for_all_namespaces, name="edgecontroller endpoints")
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.nodes.run, self._on_node)
                for informer, handler in (
                    (self.configmaps, partial(self._on_config, "configmap")),
                    (self.secrets, partial(self._on_config, "secret")),
                    (self.services, partial(self._on_service, "service")),
                    (self.endpoints, partial(self._on_service, "endpoints")),
                    (self.pods, self._on_pod),
                ):
                    await nursery.start(informer.run, handler)
                start = trio.current_time()
                for node in self.nodes.items():
                    self.last_heard.setdefault(node["metadata"]["name"], start)
                nursery.start_soon(self._leases)
                nursery.start_soon(self._monitor)
                task_status.started()
                async for message in ctx.bus.channel(self.name):
                    try:
                        await self.handle(message)
                    except Exception as exc:
                        if type(exc).__name__ == "ApiException":
                            log.warning("edgecontroller: %s %s: API said %s", message.operation, message.resource, exc)
                        else:
                            log.exception("edgecontroller: handling %s %s failed", message.operation, message.resource)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(kube.close)

    async def send(self, node: str, operation: str, kind: str, obj: dict[str, Any]) -> None:
        assert self.ctx is not None
        if not self.ctx.bus.has_module("cloudhub"):
            log.debug("edgecontroller: no cloudhub on the bus; %s %s for node %s dropped", operation, kind, node)
            return
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        message = Message(
            source=self.name,
            group="resource",
            operation=operation,
            resource=f"node/{node}/{namespace}/{kind}/{meta.get('name', '')}",
            resource_version=str(meta.get("resourceVersion") or ""),
            content=obj,
        )
        await self.ctx.send("cloudhub", message)
        self.sent_messages += 1

    def is_edge(self, node: str) -> bool:
        assert self.nodes is not None
        obj = self.nodes.get("", node)
        return node in self.connected or bool(obj and EDGE_ROLE in ((obj.get("metadata") or {}).get("labels") or {}))

    def edge_nodes(self) -> list[str]:
        assert self.nodes is not None
        names = {n["metadata"]["name"] for n in self.nodes.items() if EDGE_ROLE in (n["metadata"].get("labels") or {})}
        return sorted(names | self.connected)

    # -- downstream -----------------------------------------------------------------------------------------

    async def _on_node(self, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        name = obj["metadata"]["name"]
        if kind == "DELETED":
            # cloudhub drops the node's queue and its ObjectSync records.
            self.connected.discard(name)
            self.last_heard.pop(name, None)
            assert self.ctx is not None
            if self.ctx.bus.has_module("cloudhub") and EDGE_ROLE in ((obj.get("metadata") or {}).get("labels") or {}):
                await self.ctx.send(
                    "cloudhub", Message(source=self.name, group="resource", operation="delete", resource=f"node/{name}")
                )
            return
        if kind == "ADDED" and name not in self.last_heard:
            self.last_heard[name] = trio.current_time()
        if kind == "ADDED" and self.pods is not None and self.pods.synced.is_set() and self.is_edge(name):
            await self.sync_node(name)

    async def _send_pod_with_config(self, node: str, operation: str, pod: dict[str, Any]) -> None:
        assert self.configmaps is not None and self.secrets is not None
        namespace = pod["metadata"].get("namespace", "default")
        if operation != "delete":
            configmaps, secrets = referenced(pod)
            for name in sorted(configmaps):
                configmap = self.configmaps.get(namespace, name)
                if configmap is not None:
                    await self.send(node, "insert", "configmap", configmap)
            for name in sorted(secrets):
                secret = self.secrets.get(namespace, name)
                if secret is not None:
                    await self.send(node, "insert", "secret", secret)
        await self.send(node, operation, "pod", pod)

    async def _on_pod(self, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        node = (obj.get("spec") or {}).get("nodeName") or ""
        sent_to = self.sent_pods.get(key)
        if kind == "DELETED":
            if sent_to:
                self.sent_pods.pop(key, None)
                await self.send(sent_to, "delete", "pod", obj)
            return
        if sent_to and sent_to != node:
            self.sent_pods.pop(key, None)
            await self.send(sent_to, "delete", "pod", obj)
            sent_to = None
        if not node or not self.is_edge(node):
            return
        if sent_to is None:
            self.sent_pods[key] = node
            await self._send_pod_with_config(node, "insert", obj)
        elif _spec_or_meta_changed(obj, old):
            await self.send(node, "update", "pod", obj)

    def _pods_using(self, kind: str, namespace: str, name: str) -> set[str]:
        assert self.pods is not None
        nodes: set[str] = set()
        for pod in self.pods.items():
            if pod["metadata"].get("namespace") != namespace:
                continue
            node = (pod.get("spec") or {}).get("nodeName")
            if not node or not self.is_edge(node):
                continue
            configmaps, secrets = referenced(pod)
            if name in (configmaps if kind == "configmap" else secrets):
                nodes.add(node)
        return nodes

    async def _on_config(self, resource: str, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        operation = {"ADDED": "insert", "MODIFIED": "update", "DELETED": "delete"}[kind]
        for node in sorted(self._pods_using(resource, *_key(obj))):
            await self.send(node, operation, resource, obj)

    async def _on_service(self, resource: str, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        operation = {"ADDED": "insert", "MODIFIED": "update", "DELETED": "delete"}[kind]
        for node in self.edge_nodes():
            await self.send(node, operation, resource, obj)

    async def sync_node(self, node: str) -> None:
        """Everything an edge node should have: its pods with their configmaps/secrets, services, endpoints."""
        assert self.pods is not None and self.services is not None and self.endpoints is not None
        for service in self.services.items():
            await self.send(node, "insert", "service", service)
        for endpoints in self.endpoints.items():
            await self.send(node, "insert", "endpoints", endpoints)
        for pod in self.pods.items():
            if (pod.get("spec") or {}).get("nodeName") == node:
                self.sent_pods[_key(pod)] = node
                await self._send_pod_with_config(node, "insert", pod)

    # -- upstream -------------------------------------------------------------------------------------------

    async def handle(self, message: Message) -> None:
        node, rest = parse_resource(message.resource)
        if not node:
            log.debug("edgecontroller: ignoring %s %s", message.operation, message.resource)
            return
        self.last_heard[node] = trio.current_time()
        if message.operation == "connected":
            log.info("edgecontroller: node %s connected", node)
            self.connected.add(node)
            await self.ensure_node(node, None)
            await self.sync_node(node)
            return
        if message.operation == "disconnected":
            log.info("edgecontroller: node %s disconnected", node)
            self.connected.discard(node)
            return
        if len(rest) >= 2:
            namespace, kind = rest[0], rest[1]
            name = rest[2] if len(rest) > 2 else ""
            if message.operation in ("insert", "update", "patch") and kind == "node":
                await self.ensure_node(name or node, message.content if isinstance(message.content, dict) else None)
                return
            if message.operation in ("insert", "update", "patch") and kind == "nodestatus":
                await self.write_node_status(name or node, _node_status_of(message.content))
                return
            if message.operation in ("insert", "update", "patch") and kind == "podstatus":
                await self.write_pod_status(namespace, name, message.content)
                return
            if message.operation == "delete" and kind == "pod" and name:
                await self.confirm_pod_deleted(namespace, name, message.content)
                return
            if message.operation in ("query", "get"):
                await self.answer_query(node, message, namespace, kind, name)
                return
        log.debug("edgecontroller: ignoring %s %s from node %s", message.operation, message.resource, node)

    async def answer_query(self, node: str, message: Message, namespace: str, kind: str, name: str) -> None:
        assert self.ctx is not None
        informers = {
            "configmap": self.configmaps,
            "secret": self.secrets,
            "pod": self.pods,
            "service": self.services,
            "endpoints": self.endpoints,
        }
        informer = informers.get(kind)
        content: Any = None
        if informer is not None:
            content = (
                informer.get(namespace, name)
                if name
                else [o for o in informer.items() if o["metadata"].get("namespace") == namespace]
            )
        reply = Message(
            source=self.name,
            group="resource",
            operation="response",
            resource=message.resource,
            parent_msg_id=message.msg_id,
            content=content if content is not None else "not found",
        )
        if self.ctx.bus.has_module("cloudhub"):
            await self.ctx.send("cloudhub", reply)

    async def ensure_node(self, node: str, reported: dict[str, Any] | None) -> None:
        """Create the Node of an edge if missing (labels and roles as KubeEdge's), then post it Ready."""
        assert self.kube is not None and self.nodes is not None
        core = self.kube.core
        existing = self.nodes.get("", node)
        labels = {EDGE_ROLE: "", AGENT_ROLE: "", "kubernetes.io/hostname": node}
        if reported:
            labels = {**((reported.get("metadata") or {}).get("labels") or {}), **labels}
        if existing is None:
            body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": labels}}
            try:
                existing = await self.kube.call(core.create_node, body)
            except Exception as exc:
                if getattr(exc, "status", None) != 409:
                    raise
                existing = await self.kube.call(core.read_node, node)
        else:
            missing = {
                k: v for k, v in labels.items() if ((existing.get("metadata") or {}).get("labels") or {}).get(k) != v
            }
            if missing:
                await self.kube.call(core.patch_node, node, {"metadata": {"labels": missing}})
        status = (reported or {}).get("status") if reported else None
        await self.write_node_status(node, status if isinstance(status, dict) else {})

    async def write_node_status(self, node: str, reported: dict[str, Any]) -> None:
        assert self.kube is not None and self.nodes is not None
        core = self.kube.core
        current = self.nodes.get("", node) or {}
        old_status = current.get("status") or {}
        status = copy.deepcopy(reported or {})
        now = _now()
        previous_ready = next((c for c in old_status.get("conditions") or [] if c.get("type") == "Ready"), None)
        transition = (
            previous_ready.get("lastTransitionTime")
            if previous_ready and previous_ready.get("status") == "True"
            else now
        )
        conditions = [
            c for c in status.get("conditions") or old_status.get("conditions") or [] if c.get("type") != "Ready"
        ]
        conditions.append(
            {
                "type": "Ready",
                "status": "True",
                "reason": "EdgeReady",
                "message": "edge is posting ready status",
                "lastHeartbeatTime": now,
                "lastTransitionTime": transition,
            }
        )
        status["conditions"] = conditions
        status.setdefault("capacity", old_status.get("capacity") or dict(DEFAULT_CAPACITY))
        status.setdefault("allocatable", old_status.get("allocatable") or dict(status["capacity"]))
        status.setdefault("addresses", old_status.get("addresses") or [{"type": "Hostname", "address": node}])
        info = {**(old_status.get("nodeInfo") or {}), **(status.get("nodeInfo") or {})}
        info["kubeletVersion"] = KUBELET_VERSION
        info.setdefault("operatingSystem", "linux")
        info.setdefault("architecture", "amd64")
        # Every NodeSystemInfo field is required in the API's schema; clients (the Python one among them)
        # refuse a Node that lacks one, so an edge without edged still gets them, empty.
        for required in (
            "machineID",
            "systemUUID",
            "bootID",
            "kernelVersion",
            "osImage",
            "containerRuntimeVersion",
            "kubeProxyVersion",
        ):
            info.setdefault(required, "")
        status["nodeInfo"] = info
        status.setdefault("daemonEndpoints", {"kubeletEndpoint": {"Port": 10350}})
        kube = self.kube
        await call_with_retry(lambda: kube.call(core.patch_node_status, node, {"status": status}, _content_type=MERGE))

    async def write_pod_status(self, namespace: str, name: str, content: Any) -> None:
        assert self.kube is not None
        updates: list[tuple[str, dict[str, Any]]] = []
        # edged sends KubeEdge's PodStatusRequest ({"UID", "Name", "Status"}), possibly a list of them; a plain
        # PodStatus or {"status": ...} is accepted too.
        for item in content if isinstance(content, list) else [content]:
            if not isinstance(item, dict):
                continue
            status = item.get("Status", item.get("status"))
            if isinstance(status, dict):
                updates.append((str(item.get("Name") or item.get("name") or name), status))
            elif "phase" in item or "conditions" in item or "containerStatuses" in item:
                updates.append((name, item))
        for pod_name, status in updates:
            if not pod_name:
                continue
            try:
                await self.kube.call(
                    self.kube.core.patch_namespaced_pod_status,
                    pod_name,
                    namespace,
                    {"status": status},
                    _content_type=MERGE,
                )
            except Exception as exc:
                if getattr(exc, "status", None) == 404:
                    log.info("edgecontroller: status for unknown pod %s/%s dropped", namespace, pod_name)
                    continue
                raise

    async def confirm_pod_deleted(self, namespace: str, name: str, content: Any) -> None:
        """The edge stopped the pod: remove the API object (as kubelet does), only if it is still that pod."""
        assert self.kube is not None
        uid = ((content or {}).get("metadata") or {}).get("uid") if isinstance(content, dict) else None
        body: dict[str, Any] = {"gracePeriodSeconds": 0}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self.kube.call(self.kube.core.delete_namespaced_pod, name, namespace, body=body)
        except Exception as exc:
            if getattr(exc, "status", None) not in (404, 409):
                raise
            log.debug("edgecontroller: pod %s/%s already gone or replaced", namespace, name)

    # -- liveness -------------------------------------------------------------------------------------------

    async def _leases(self) -> None:
        assert self.kube is not None
        coordination = self.kube.coordination
        while True:
            for node in sorted(self.connected):
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": node, "namespace": "kube-node-lease"},
                    "spec": {
                        "holderIdentity": node,
                        "leaseDurationSeconds": self.lease_duration,
                        "renewTime": _micro_now(),
                    },
                }
                try:
                    await self.kube.call(
                        coordination.patch_namespaced_lease,
                        node,
                        "kube-node-lease",
                        {"spec": body["spec"]},
                        _content_type=MERGE,
                    )
                except Exception as exc:
                    if getattr(exc, "status", None) != 404:
                        log.warning("edgecontroller: renewing the lease of node %s failed: %s", node, exc)
                        continue
                    try:
                        await self.kube.call(coordination.create_namespaced_lease, "kube-node-lease", body)
                    except Exception as create_error:
                        log.warning("edgecontroller: creating the lease of node %s failed: %s", node, create_error)
            await trio.sleep(self.lease_interval)

    async def _monitor(self) -> None:
        """Nodes silent past the grace period go Ready=Unknown; their pods stay (no eviction)."""
        assert self.kube is not None and self.nodes is not None
        while True:
            await trio.sleep(min(self.grace / 4, 5.0))
            now = trio.current_time()
            for node in self.nodes.items():
                name = node["metadata"]["name"]
                if EDGE_ROLE not in (node["metadata"].get("labels") or {}):
                    continue
                if name in self.connected and now - self.last_heard.get(name, now) < self.grace:
                    continue
                if now - self.last_heard.get(name, now) < self.grace:
                    continue
                await self.mark_not_ready(name, node)

    async def mark_not_ready(self, name: str, node: dict[str, Any]) -> None:
        assert self.kube is not None
        conditions = list((node.get("status") or {}).get("conditions") or [])
        ready = next((c for c in conditions if c.get("type") == "Ready"), None)
        if ready is not None and ready.get("status") == "Unknown":
            return
        now = _now()
        updated = [c for c in conditions if c.get("type") != "Ready"] + [
            {
                "type": "Ready",
                "status": "Unknown",
                "reason": "NodeStatusUnknown",
                "message": "Kubelet stopped posting node status.",
                "lastHeartbeatTime": (ready or {}).get("lastHeartbeatTime", now),
                "lastTransitionTime": now,
            }
        ]
        log.warning(
            "edgecontroller: node %s silent for more than %.0f s: NotReady (its pods are kept)", name, self.grace
        )
        try:
            await self.kube.call(
                self.kube.core.patch_node_status, name, {"status": {"conditions": updated}}, _content_type=MERGE
            )
        except Exception as exc:
            log.warning("edgecontroller: marking node %s NotReady failed: %s", name, exc)
            return
        await self.mark_pods_not_ready(name)

    async def mark_pods_not_ready(self, node: str) -> None:
        """As the node lifecycle controller does: the node's pods stay, but no longer count as Ready.

        The pods are read from the API, not the informer's cache: a status the node reported just before it
        went silent may not have reached the cache yet, and a pod it still shows as not Ready would stay Ready.
        """
        assert self.kube is not None
        try:
            listed = await self.kube.call(
                self.kube.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={node}"
            )
        except Exception as exc:
            log.warning("edgecontroller: listing the pods of node %s failed: %s", node, exc)
            return
        for pod in (listed or {}).get("items") or []:
            if (pod.get("spec") or {}).get("nodeName") != node:
                continue
            conditions = list((pod.get("status") or {}).get("conditions") or [])
            ready = next((c for c in conditions if c.get("type") == "Ready"), None)
            if ready is None or ready.get("status") != "True":
                continue
            changed = [c for c in conditions if c.get("type") != "Ready"] + [
                {**ready, "status": "False", "reason": "NodeNotReady", "lastTransitionTime": _now()}
            ]
            namespace, name = _key(pod)
            try:
                await self.kube.call(
                    self.kube.core.patch_namespaced_pod_status,
                    name,
                    namespace,
                    {"status": {"conditions": changed}},
                    _content_type=MERGE,
                )
            except Exception as exc:
                log.warning("edgecontroller: marking pod %s/%s not ready failed: %s", namespace, name, exc)


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _spec_or_meta_changed(new: dict[str, Any], old: dict[str, Any] | None) -> bool:
    if old is None:
        return True
    strip = ("resourceVersion", "managedFields", "generation")
    new_meta = {k: v for k, v in (new.get("metadata") or {}).items() if k not in strip}
    old_meta = {k: v for k, v in (old.get("metadata") or {}).items() if k not in strip}
    return new.get("spec") != old.get("spec") or new_meta != old_meta


def _node_status_of(content: Any) -> dict[str, Any]:
    """KubeEdge's NodeStatusRequest (``{"UID", "Status", "ExtendInfo"}``) or a plain NodeStatus."""
    if not isinstance(content, dict):
        return {}
    for key in ("status", "Status"):
        if isinstance(content.get(key), dict):
            return content[key]
    return content

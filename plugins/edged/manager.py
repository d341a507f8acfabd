"""edged's pod manager: messages from metamanager in, pod workers, status, node, relist, image GC.

The manager is the part of edged that knows about the bus. Pods, configmaps and secrets arrive from
metamanager (``<ns>/pod/<name>`` insert/update/delete, likewise ``configmap`` and ``secret``); objects a pod
needs are asked of metamanager (``query``), which answers from the node's store whether the cloud is there
or not. Status goes back to metamanager: ``<ns>/podstatus/<name>`` on every change and every
``podStatusInterval``, the Node at start (``default/node/<node>``) and ``default/nodestatus/<node>`` every
``nodeStatusInterval``.

After a restart, :meth:`PodManager.recover` asks metamanager for the pods it stores and hands each to a
worker that adopts the containers still there (matching containers keep running), then removes the
containers whose pod is gone.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import trio

from kubeedge import Context, Message

from . import pods
from .imagegc import GCPolicy, collect_images
from .node import detect_node_ip, machine_resources, node_object, node_status, rfc3339
from .runtime import LABEL_MANAGED, LABEL_NODE, LABEL_UID, ContainerRuntime, RuntimeError_
from .worker import PodWorker

__all__ = ["PodManager", "Settings"]

log = logging.getLogger("kubeedge.edged")

META = "metamanager"


class Settings:
    """edged's profile section with KubeEdge's defaults."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.runtime = str(config.get("runtime", "podman"))
        self.pod_network = str(config.get("podNetwork", "bridge"))
        self.node_ip = str(config.get("nodeIP") or "")
        self.pod_status_interval = float(config.get("podStatusInterval", 10))
        self.node_status_interval = float(config.get("nodeStatusInterval", 10))
        self.relist_interval = float(config.get("relistInterval", 1))
        self.resync_interval = float(config.get("resyncInterval", 10))
        backoff = config.get("backoff") or {}
        self.backoff_initial = float(backoff.get("initialSeconds", 10))
        self.backoff_max = float(backoff.get("maxSeconds", 300))
        self.backoff_reset = float(backoff.get("resetSeconds", 2 * self.backoff_max))
        gc = config.get("imageGC") or {}
        self.image_gc = GCPolicy(
            high_percent=int(gc.get("highThresholdPercent", 85)),
            low_percent=int(gc.get("lowThresholdPercent", 80)),
            min_age=float(gc.get("minAgeSeconds", 120)),
        )
        self.image_gc_interval = float(gc.get("intervalSeconds", 300))
        self.register_node = bool(config.get("registerNode", True))
        self.max_pods = int(config.get("maxPods", 110))
        self.query_timeout = float(config.get("queryTimeout", 10))
        self.pull_failure_memory = float(config.get("pullFailureMemorySeconds", 300))


def _content(content: Any) -> Any:
    """Message content as an object: KubeEdge's metamanager sometimes answers with JSON text."""
    if isinstance(content, bytes | bytearray):
        content = content.decode()
    if isinstance(content, str):
        try:
            return json.loads(content)
        except ValueError:
            return content
    return content


class PodManager:
    def __init__(self, ctx: Context, runtime: ContainerRuntime, settings: Settings, nursery: trio.Nursery) -> None:
        self.ctx = ctx
        self.runtime = runtime
        self.settings = settings
        self.nursery = nursery
        self.node_name = ctx.node_name
        self.node_ip = settings.node_ip or detect_node_ip()
        self.pods_dir = Path(ctx.data_dir) / "edged" / "pods"
        self.workers: dict[str, PodWorker] = {}  # uid -> worker
        self.by_key: dict[str, PodWorker] = {}  # ns/name -> newest worker
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (kind, ns, name) -> object
        self.image_last_used: dict[str, float] = {}
        self.image_fs: Path | None = None
        self.pull_failures: dict[str, float] = {}  # image -> when a pull last failed (monotonic)
        self.authoritative = False  # True once the pod list came from metamanager
        self.cloud_connected = False
        self.backoff_initial = settings.backoff_initial
        self.backoff_max = settings.backoff_max
        self.backoff_reset = settings.backoff_reset
        self.resync_interval = settings.resync_interval
        self.node_registered = False
        self.ready_since = rfc3339()
        self.runtime_version = ""
        self.own_labels = {LABEL_MANAGED: "true", LABEL_NODE: self.node_name}

    # -- helpers for workers ------------------------------------------------------------------------------

    def network_for(self, pod: dict[str, Any]) -> str:
        if (pod.get("spec") or {}).get("hostNetwork"):
            return "host"
        return self.settings.pod_network

    async def ensure_image(self, image: str, policy: str) -> None:
        if not image:
            raise RuntimeError_("container has no image")
        tag_latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
        policy = policy or ("Always" if tag_latest else "IfNotPresent")
        present = await self.runtime.image_present(image)
        if present and policy != "Always":
            return
        if policy == "Never":
            raise RuntimeError_(f'image "{image}" is not present with pull policy of Never')
        failed_at = self.pull_failures.get(image)
        if present and failed_at is not None and time.monotonic() - failed_at < self.settings.pull_failure_memory:
            return  # the registry was away a moment ago: do not make every start wait for it again
        try:
            await self.runtime.pull_image(image)
        except RuntimeError_:
            self.pull_failures[image] = time.monotonic()
            if present:  # Always, but the registry is away: the edge keeps using what it has
                log.info("node %s: pulling %s failed; using the local copy", self.node_name, image)
                return
            raise
        self.pull_failures.pop(image, None)

    def image_used(self, image: str) -> None:
        self.image_last_used[image] = time.time()

    async def query(self, resource: str) -> Any:
        """Ask metamanager for a resource; None when it does not know it (or is not on the bus)."""
        if not self.ctx.bus.has_module(META):
            return None
        reply = await self.ctx.send_sync(
            META,
            Message(source="edged", group="meta", operation="query", resource=resource),
            timeout=self.settings.query_timeout,
        )
        if reply.operation == "error":
            return None
        return _content(reply.content)

    async def fetch_objects(self, pod: dict[str, Any]) -> pods.Objects:
        namespace = str((pod.get("metadata") or {}).get("namespace") or "default")
        configmaps, secrets = pods.references(pod)
        objects = pods.Objects()
        for kind, names, target in (
            ("configmap", configmaps, objects.configmaps),
            ("secret", secrets, objects.secrets),
        ):
            for name in names:
                key = (kind, namespace, name)
                obj = self.objects.get(key)
                if obj is None:
                    try:
                        found = await self.query(f"{namespace}/{kind}/{name}")
                    except Exception as exc:  # a timeout or a bus error: treat as not there yet, retry later
                        log.warning("node %s: query %s/%s/%s failed: %s", self.node_name, namespace, kind, name, exc)
                        found = None
                    if isinstance(found, list):
                        found = _content(found[0]) if found else None
                    if isinstance(found, dict) and found:
                        obj = found
                        self.objects[key] = obj
                if obj is not None:
                    target[name] = obj
        return objects

    async def report_status(self, worker: PodWorker, status: dict[str, Any]) -> None:
        if not self.ctx.bus.has_module(META):
            return
        await self.ctx.send(
            META,
            Message(
                source="edged",
                group="meta",
                operation="update",
                resource=f"{worker.namespace}/podstatus/{worker.name}",
                content={"UID": worker.uid, "Name": worker.name, "Status": status},
            ),
        )

    def worker_done(self, worker: PodWorker) -> None:
        if self.workers.get(worker.uid) is worker:
            del self.workers[worker.uid]
        if self.by_key.get(worker.key) is worker:
            del self.by_key[worker.key]
        if worker.report_delete and self.ctx.bus.has_module(META):
            # kubelet deletes the API object once a pod with a deletionTimestamp is gone; at the edge that is
            # a delete to metamanager, which removes it locally and forwards it to the cloud.
            message = Message(
                source="edged",
                group="meta",
                operation="delete",
                resource=f"{worker.namespace}/pod/{worker.name}",
                content={
                    "metadata": {"uid": worker.uid, "name": worker.name, "namespace": worker.namespace},
                    "gracePeriodSeconds": 0,
                },
            )
            try:
                self.ctx.bus.send_nowait(META, message)
            except (trio.WouldBlock, trio.ClosedResourceError):
                log.warning("node %s: could not tell metamanager pod %s is gone", self.node_name, worker.key)

    # -- pods ----------------------------------------------------------------------------------------------

    def add_pod(self, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        key = pods.pod_key(pod)
        if not uid or not meta.get("name"):
            log.warning("node %s: pod without metadata.name/uid ignored: %s", self.node_name, key)
            return
        node = (pod.get("spec") or {}).get("nodeName")
        if node and node != self.node_name:
            log.warning("node %s: pod %s is for node %s; ignored", self.node_name, key, node)
            return
        if meta.get("deletionTimestamp"):
            self.delete_pod(pod, report=True)
            return
        worker = self.workers.get(uid)
        if worker is not None:
            if worker.terminating is None:
                worker.update(pod)
            return
        previous = self.by_key.get(key)
        if previous is not None and previous.uid != uid:
            previous.terminate(pods.grace_period(previous.pod))
        worker = PodWorker(self, pod, previous)
        self.workers[uid] = worker
        self.by_key[key] = worker
        self.pods_dir.joinpath(uid).mkdir(parents=True, exist_ok=True)
        self.nursery.start_soon(worker.run, name=f"edged pod {key}")

    def delete_pod(self, pod: dict[str, Any], *, report: bool = False, grace: float | None = None) -> None:
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        worker = self.workers.get(uid) if uid else self.by_key.get(pods.pod_key(pod))
        if worker is None:
            if report and uid and self.ctx.bus.has_module(META):
                # never ran here (or already gone): still let the API forget it
                dummy = PodWorker(self, pod)
                dummy.report_delete = True
                self.worker_done(dummy)
            return
        worker.terminate(pods.grace_period(pod, grace), report_delete=report)

    async def handle(self, message: Message) -> None:
        if message.is_response and not message.operation.startswith(("insert", "update", "delete")):
            return
        if message.resource == "node/connection":
            await self._connection(_content(message.content))
            return
        parts = message.resource.split("/")
        if len(parts) < 2:
            log.debug("node %s: edged ignores %s %s", self.node_name, message.operation, message.resource)
            return
        namespace, kind = parts[0], parts[1]
        name = parts[2] if len(parts) > 2 else ""
        content = _content(message.content)
        operation = message.operation
        if kind == "pod" and name and isinstance(content, dict):
            if operation in ("insert", "update"):
                self.add_pod(content)
            elif operation == "delete":
                self.delete_pod(content)
            else:
                log.debug("node %s: edged ignores %s on pod %s", self.node_name, operation, name)
        elif kind == "pod" and name and operation == "delete":
            worker = self.by_key.get(f"{namespace}/{name}")
            if worker is not None:
                worker.terminate(pods.grace_period(worker.pod))
        elif kind in ("configmap", "secret") and name:
            key = (kind, namespace, name)
            if operation in ("insert", "update") and isinstance(content, dict):
                self.objects[key] = content
            elif operation == "delete":
                self.objects.pop(key, None)
            else:
                return
            for worker in list(self.workers.values()):
                if worker.namespace != namespace:
                    continue
                configmaps, secrets = pods.references(worker.pod)
                if name in (configmaps if kind == "configmap" else secrets):
                    worker.wake(refresh_volumes=True)
        else:
            log.debug("node %s: edged ignores %s %s", self.node_name, operation, message.resource)

    async def _connection(self, content: Any) -> None:
        connected = content == "cloud_connected"
        was = self.cloud_connected
        self.cloud_connected = connected
        if connected and not was:
            # the cloud may have missed updates while away: report everything once now
            await self.report_node(register=not self.node_registered)
            for worker in list(self.workers.values()):
                await worker.republish()

    # -- recovery ----------------------------------------------------------------------------------------

    async def known_namespaces(self) -> set[str]:
        namespaces = {"default"}
        for container in await self.runtime.list_containers(self.own_labels):
            parsed = pods.parse_labels(container.labels)
            if parsed:
                namespaces.add(parsed[0])
        return namespaces

    async def recover(self) -> None:
        """Recreate/adopt the pods metamanager stores; then remove containers no pod owns."""
        if not self.ctx.bus.has_module(META):
            log.warning("node %s: no metamanager on the bus: edged starts with no pods", self.node_name)
            return
        listed: list[dict[str, Any]] = []
        try:
            for namespace in sorted(await self.known_namespaces()):
                found = await self.query(f"{namespace}/pod")
                if isinstance(found, dict):
                    found = found.get("items") or [found]
                for item in found or []:
                    item = _content(item)
                    if isinstance(item, dict) and (item.get("metadata") or {}).get("uid"):
                        listed.append(item)
        except Exception as exc:
            log.warning("node %s: could not list pods from metamanager (%s); orphans are kept", self.node_name, exc)
            return
        for pod in listed:
            self.add_pod(pod)
        self.authoritative = True
        await self.remove_orphans()
        log.info("node %s: edged recovered %d pods from the local store", self.node_name, len(listed))

    async def remove_orphans(self) -> None:
        if not self.authoritative:
            return
        removed = 0
        for container in await self.runtime.list_containers(self.own_labels):
            uid = container.labels.get(LABEL_UID, "")
            if uid in self.workers:
                continue
            await self.runtime.remove_container(container.id)
            removed += 1
        for uid in await self.runtime.pod_sandboxes(self.own_labels):
            if uid not in self.workers:
                await self.runtime.remove_pod_sandbox(uid)
                removed += 1
        if removed:
            log.info("node %s: removed %d orphaned containers and sandboxes", self.node_name, removed)
        wanted = set(self.workers)
        if self.pods_dir.is_dir():
            for child in self.pods_dir.iterdir():
                if child.name not in wanted:
                    await trio.to_thread.run_sync(shutil.rmtree, child, True)

    # -- loops ---------------------------------------------------------------------------------------------

    async def relist(self) -> None:
        """kubelet's PLEG: list our containers, wake the pods whose containers changed state."""
        seen: dict[str, str] = {}
        while True:
            await trio.sleep(self.settings.relist_interval)
            try:
                listed = await self.runtime.list_containers(self.own_labels)
            except RuntimeError_ as exc:
                log.warning("node %s: relist failed: %s", self.node_name, exc)
                continue
            current: dict[str, str] = {c.id: c.state for c in listed}
            changed_uids = set()
            for container in listed:
                if seen.get(container.id) != container.state:
                    changed_uids.add(container.labels.get(LABEL_UID, ""))
            for gone in set(seen) - set(current):
                changed_uids.add("")  # a container vanished: the worker owning it finds out on sync
                del seen[gone]
            seen = current
            for uid in changed_uids:
                if uid in self.workers:
                    self.workers[uid].wake()
                elif uid == "":
                    for worker in self.workers.values():
                        worker.wake()

    async def report_pod_statuses(self) -> None:
        while True:
            await trio.sleep(self.settings.pod_status_interval)
            for worker in list(self.workers.values()):
                await worker.republish()

    async def report_node(self, *, register: bool = False) -> None:
        if not self.ctx.bus.has_module(META):
            return
        if not self.runtime_version:
            try:
                self.runtime_version = f"{self.runtime.name}://{await self.runtime.version()}"
            except RuntimeError_:
                self.runtime_version = f"{self.runtime.name}://unknown"
        if self.image_fs is None:  # asked once: podman's /info is slow and the answer does not change
            try:
                self.image_fs = await self.runtime.image_fs()
            except RuntimeError_:
                self.image_fs = Path(self.ctx.data_dir)
        storage = self.image_fs
        resources = await trio.to_thread.run_sync(machine_resources, storage, self.settings.max_pods)
        status = node_status(
            node_ip=self.node_ip,
            runtime_version=self.runtime_version,
            resources=resources,
            ready_since=self.ready_since,
        )
        if register:
            labels = {**dict(self.ctx.profile.node_labels)}
            node = node_object(self.node_name, labels=labels, status=status)
            await self.ctx.send(
                META,
                Message(
                    source="edged",
                    group="meta",
                    operation="insert",
                    resource=f"default/node/{self.node_name}",
                    content=node,
                ),
            )
            self.node_registered = True
            return
        await self.ctx.send(
            META,
            Message(
                source="edged",
                group="meta",
                operation="update",
                resource=f"default/nodestatus/{self.node_name}",
                content={"UID": "", "Status": status, "ExtendResources": None},
            ),
        )

    async def node_loop(self) -> None:
        if self.settings.register_node:
            await self.report_node(register=True)
        while True:
            await trio.sleep(self.settings.node_status_interval)
            await self.report_node()

    async def image_gc_once(self) -> list[str]:
        """One image GC pass; returns the ids removed."""
        removed = await collect_images(self.runtime, self.settings.image_gc, last_used_by_tag=self.image_last_used)
        return [image.id for image in removed]

    async def image_gc_loop(self) -> None:
        if math.isinf(self.settings.image_gc_interval) or self.settings.image_gc_interval <= 0:
            return
        while True:
            await trio.sleep(self.settings.image_gc_interval)
            try:
                await self.image_gc_once()
            except RuntimeError_ as exc:
                log.warning("node %s: image GC failed: %s", self.node_name, exc)

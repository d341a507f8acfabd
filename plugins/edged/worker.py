"""One pod on the node: kubelet's pod worker, reduced to what an edge node needs.

A :class:`PodWorker` owns one pod (one UID) from the moment edged accepts it until its containers are gone.
It syncs when woken (spec change, a container changed state, a probe flipped, a configmap changed) or when
a backoff expires: it adopts containers a previous edged left running, creates what is missing, restarts
what exited as the restartPolicy says (10 s doubling to 5 min by default, reset after a long run), replaces
containers whose spec changed or whose liveness probe failed, and computes the pod status by kubelet's
rules. Terminating stops every container with the grace period, removes them and the pod's directory.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import trio

from . import pods
from .node import rfc3339
from .probes import ProbeSpec, probe_once, run_probe
from .runtime import LABEL_CONTAINER, LABEL_HASH, LABEL_RESTART_COUNT, LABEL_UID, ContainerStatus, RuntimeError_

if TYPE_CHECKING:
    from .manager import PodManager

__all__ = ["PodWorker"]

log = logging.getLogger("kubeedge.edged")

_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|z|[+-]\d\d:\d\d)$")


@dataclass
class ContainerRecord:
    name: str
    id: str = ""
    previous_id: str = ""  # the last dead attempt, kept (as kubelet keeps one) for `kubectl logs --previous`
    hash: str = ""
    restart_count: int = 0
    created_once: bool = False
    status: ContainerStatus | None = None
    waiting: tuple[str, str] | None = None
    last_terminated: dict[str, Any] | None = None
    backoff: float = 0.0
    next_start: float = 0.0
    exit_seen: str = ""
    ready: bool = False
    started: bool = False
    unhealthy: str = ""  # why liveness/startup failed: the container is killed on the next sync
    probe_scope: trio.CancelScope | None = None
    probes_for: str = ""
    start_error: dict[str, str] = field(default_factory=dict)


def _seconds(value: str) -> float | None:
    """Seconds since the epoch of an RFC 3339 time with any number of fractional digits, or None."""
    match = _RFC3339.match(value or "")
    if not match:
        return None
    base, fraction, zone = match.groups()
    text = base + (fraction[:7] if fraction else "") + ("+00:00" if zone in ("Z", "z") else zone)
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _short_time(value: str) -> str:
    """podman's RFC 3339 with nanoseconds -> Kubernetes' whole seconds in UTC."""
    seconds = _seconds(value)
    return rfc3339(seconds) if seconds is not None else ""


class PodWorker:
    def __init__(self, manager: PodManager, pod: dict[str, Any], previous: PodWorker | None = None) -> None:
        self.manager = manager
        self.pod = pod
        meta = pod.get("metadata") or {}
        self.uid = str(meta.get("uid", ""))
        self.namespace = str(meta.get("namespace") or "default")
        self.name = str(meta.get("name", ""))
        self.key = f"{self.namespace}/{self.name}"
        self.previous = previous
        self.records: dict[str, ContainerRecord] = {}  # init and app containers (their names are unique)
        self.initialized = not (pod.get("spec") or {}).get("initContainers")
        self.init_failed = False
        self.terminating: float | None = None
        self.report_delete = False
        self.done = trio.Event()
        self.refresh_volumes = True
        self.volumes: dict[str, str] | None = None
        self.objects = pods.Objects()
        self.pod_error: str = ""
        status = pod.get("status") or {}
        self.start_time = status.get("startTime") or rfc3339()
        self.condition_times: dict[str, tuple[str, str]] = {}
        self.last_status: dict[str, Any] | None = None
        self.pod_ip = ""
        self._wake = trio.Event()
        self._probe_nursery: trio.Nursery | None = None

    # -- control from the manager ------------------------------------------------------------------------

    def wake(self, *, refresh_volumes: bool = False) -> None:
        if refresh_volumes:
            self.refresh_volumes = True
        self._wake.set()

    def update(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        self.refresh_volumes = True
        self.wake()

    def terminate(self, grace: float, *, report_delete: bool = False) -> None:
        if self.terminating is None or grace < self.terminating:
            self.terminating = grace
        self.report_delete = self.report_delete or report_delete
        self.wake()

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.pod.get("spec") or {})

    @property
    def restart_policy(self) -> str:
        return str(self.spec.get("restartPolicy") or "Always")

    # -- the loop -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if self.previous is not None:
                await self.previous.done.wait()  # same name, new UID: the old pod goes first (ports, names)
                self.previous = None
            async with trio.open_nursery() as probe_nursery:
                self._probe_nursery = probe_nursery
                adopted = False
                while self.terminating is None:
                    self._wake = trio.Event()
                    try:
                        if not adopted:
                            await self._adopt()
                            adopted = True
                        deadline = await self._sync()
                    except Exception as exc:  # a runtime hiccup (or a bug) costs this pod a retry, not edged
                        level = logging.WARNING if isinstance(exc, RuntimeError_) else logging.ERROR
                        log.log(
                            level,
                            "node %s: pod %s: sync failed: %s: %s",
                            self.manager.node_name,
                            self.key,
                            type(exc).__name__,
                            exc,
                            exc_info=level == logging.ERROR,
                        )
                        deadline = trio.current_time() + min(self.manager.backoff_initial, 10.0)
                    await self._publish()
                    deadline = min(deadline, trio.current_time() + self.manager.resync_interval)
                    with trio.move_on_at(deadline):
                        await self._wake.wait()
                probe_nursery.cancel_scope.cancel()
            await self._terminate(self.terminating)
        finally:
            self.done.set()
            self.manager.worker_done(self)

    async def _adopt(self) -> None:
        """Take over containers of this pod that exist already (edged restarted); drop stale attempts."""
        found = await self.manager.runtime.list_containers({LABEL_UID: self.uid})
        by_name: dict[str, list[ContainerStatus]] = {}
        for container in found:
            by_name.setdefault(container.labels.get(LABEL_CONTAINER, ""), []).append(container)
        apps = {str(c.get("name")) for c in self.spec.get("containers") or []}
        wanted = apps | {str(c.get("name")) for c in self.spec.get("initContainers") or []}
        if apps & set(by_name):
            self.initialized = True  # app containers exist: the init containers ran to completion before
        for name, attempts in by_name.items():
            attempts.sort(key=lambda c: int(c.labels.get(LABEL_RESTART_COUNT, "0") or 0))
            newest = attempts[-1]
            previous = attempts[-2] if len(attempts) > 1 and attempts[-2].state != "running" else None
            for stale in attempts[:-1]:
                if stale is not previous or name not in wanted:
                    await self.manager.runtime.remove_container(stale.id)
            if name not in wanted:
                await self.manager.runtime.remove_container(newest.id)
                continue
            record = self.records.setdefault(name, ContainerRecord(name))
            record.id = newest.id
            record.previous_id = previous.id if previous is not None else ""
            record.hash = newest.labels.get(LABEL_HASH, "")
            record.restart_count = int(newest.labels.get(LABEL_RESTART_COUNT, "0") or 0)
            record.created_once = True
            log.info(
                "node %s: pod %s: adopted container %s (%s, %s)",
                self.manager.node_name,
                self.key,
                name,
                newest.id[:12],
                newest.state,
            )

    async def _sync(self) -> float:
        """Make the runtime match the spec once; return when the next sync is due at the latest."""
        now = trio.current_time()
        if self.refresh_volumes or self.volumes is None:
            self.refresh_volumes = False
            try:
                self.objects = await self.manager.fetch_objects(self.pod)
                self.volumes = await trio.to_thread.run_sync(
                    pods.materialise_volumes, self.pod, self.manager.pods_dir, self.objects
                )
                self.pod_error = ""
            except pods.ConfigError as exc:
                self.pod_error = str(exc)
                self.refresh_volumes = True
                self.volumes = None
                for container in self.spec.get("containers") or []:
                    record = self.records.setdefault(container["name"], ContainerRecord(container["name"]))
                    if not record.id:
                        record.waiting = ("CreateContainerConfigError", str(exc))
                return now + min(self.manager.backoff_initial, 10.0)
        if not self.initialized:
            deadline = await self._sync_init()
            if not self.initialized:
                return deadline
        deadline = math.inf
        for container in self.spec.get("containers") or []:
            record = self.records.setdefault(container["name"], ContainerRecord(container["name"]))
            deadline = min(deadline, await self._sync_container(container, record))
        return deadline

    async def _sync_init(self) -> float:
        """Run the init containers one after another, each to success, as kubelet does."""
        policy = "Never" if self.restart_policy == "Never" else "OnFailure"
        for container in self.spec.get("initContainers") or []:
            record = self.records.setdefault(container["name"], ContainerRecord(container["name"]))
            deadline = await self._sync_container(container, record, policy=policy)
            status = record.status if record.id else None
            if status is None or status.state != "exited" or record.waiting is not None:
                return deadline
            if status.exit_code != 0:
                if policy == "Never":
                    self.init_failed = True
                return deadline
        self.initialized = True
        log.info("node %s: pod %s: init containers done", self.manager.node_name, self.key)
        return trio.current_time()

    async def _sync_container(
        self, container: dict[str, Any], record: ContainerRecord, *, policy: str | None = None
    ) -> float:
        runtime = self.manager.runtime
        now = trio.current_time()
        wanted_hash = pods.container_hash(container)
        status = await runtime.inspect_container(record.id) if record.id else None
        if record.id and status is None:
            log.warning("node %s: pod %s: container %s vanished", self.manager.node_name, self.key, record.name)
            self._stop_probes(record)
            record.id = ""
        if status is not None and status.state == "created" and record.start_error.get(status.id):
            status.state = "exited"
            status.exit_code = 128
            status.reason = "StartError"
            status.message = record.start_error[status.id]
        if status is not None and status.state == "running":
            if record.hash != wanted_hash:
                log.info(
                    "node %s: pod %s: container %s changed, replacing", self.manager.node_name, self.key, record.name
                )
                await self._stop(record, status)
                return await self._start_new(container, record, restart=True)
            if record.unhealthy:
                log.info(
                    "node %s: pod %s: container %s failed its probe (%s), killing",
                    self.manager.node_name,
                    self.key,
                    record.name,
                    record.unhealthy,
                )
                record.unhealthy = ""
                await self._stop(record, status)
                status = await runtime.inspect_container(record.id)
                if status is None:
                    return await self._start_new(container, record, restart=True)
            else:
                record.status = status
                record.waiting = None
                self._ensure_probes(container, record, status)
                return math.inf
        if status is not None and status.state == "created":
            return await self._start(container, record, status.id)
        if status is not None and status.state in ("exited", "unknown"):
            record.status = status
            self._stop_probes(record)
            record.ready = False
            if not pods.should_restart(policy or self.restart_policy, status.exit_code):
                record.waiting = None
                return math.inf
            if record.exit_seen != status.id:
                record.exit_seen = status.id
                started, finished = _seconds(status.started_at), _seconds(status.finished_at)
                if started is not None and finished is not None and finished - started >= self.manager.backoff_reset:
                    record.backoff = 0.0
                record.next_start = now + record.backoff
                record.backoff = (
                    self.manager.backoff_initial
                    if record.backoff == 0
                    else min(record.backoff * 2, self.manager.backoff_max)
                )
            if now < record.next_start:
                delay = record.next_start - now
                record.waiting = (
                    "CrashLoopBackOff",
                    f"back-off {math.ceil(delay)}s restarting failed container={record.name}"
                    f" pod={self.name}_{self.namespace}({self.uid})",
                )
                return record.next_start
            return await self._start_new(container, record, restart=True)
        return await self._start_new(container, record, restart=record.created_once)

    async def _retire(self, record: ContainerRecord) -> None:
        """The record's container makes way for a new attempt: a dead one is kept as the previous attempt
        (its logs stay readable), replacing the one kept before; a live one is removed."""
        runtime = self.manager.runtime
        current = await runtime.inspect_container(record.id)
        if current is not None and current.state != "running":
            if record.previous_id and record.previous_id != record.id:
                await runtime.remove_container(record.previous_id)
            record.previous_id = record.id
        else:
            await runtime.remove_container(record.id)
        record.id = ""

    async def _start_new(self, container: dict[str, Any], record: ContainerRecord, *, restart: bool) -> float:
        """Replace the record's container (if any) with a new attempt and start it."""
        runtime = self.manager.runtime
        now = trio.current_time()
        old = record.status if record.id else None
        if old is not None and old.state == "exited":
            record.last_terminated = self._terminated(old)
        self._stop_probes(record)
        if record.id:
            await self._retire(record)
        image = str(container.get("image", ""))
        try:
            await self.manager.ensure_image(image, str(container.get("imagePullPolicy") or ""))
        except RuntimeError_ as exc:
            if "pull policy of Never" in str(exc):
                reason = "ErrImageNeverPull"
            else:
                reason = (
                    "ErrImagePull"
                    if record.waiting is None or record.waiting[0] != "ErrImagePull"
                    else "ImagePullBackOff"
                )
            record.waiting = (reason, str(exc))
            record.next_start = now + max(record.backoff, self.manager.backoff_initial)
            record.backoff = min(max(record.backoff * 2, self.manager.backoff_initial), self.manager.backoff_max)
            return record.next_start
        count = record.restart_count + 1 if restart else record.restart_count
        try:
            config = pods.container_config(
                self.pod,
                container,
                objects=self.objects,
                volumes=self.volumes or {},
                network=self.manager.network_for(self.pod),
                node_name=self.manager.node_name,
                host_ip=self.manager.node_ip,
                restart_count=count,
            )
        except pods.ConfigError as exc:
            record.waiting = ("CreateContainerConfigError", str(exc))
            return now + min(self.manager.backoff_initial, 10.0)
        try:
            container_id = await runtime.create_container(config)
        except RuntimeError_ as exc:
            if "already in use" in str(exc):
                # a previous attempt with this name survived (edged died mid-create): clear it and retry
                await runtime.remove_container(config.name)
                container_id = await runtime.create_container(config)
            else:
                record.waiting = ("CreateContainerError", str(exc))
                return now + min(max(record.backoff, self.manager.backoff_initial), self.manager.backoff_max)
        record.id = container_id
        record.hash = pods.container_hash(container)
        record.restart_count = count
        record.created_once = True
        record.ready = False
        record.started = False
        self.manager.image_used(image)
        return await self._start(container, record, container_id)

    async def _start(self, container: dict[str, Any], record: ContainerRecord, container_id: str) -> float:
        runtime = self.manager.runtime
        try:
            await runtime.start_container(container_id)
        except RuntimeError_ as exc:
            log.warning(
                "node %s: pod %s: container %s failed to start: %s", self.manager.node_name, self.key, record.name, exc
            )
            record.start_error = {container_id: str(exc)}
            self.wake()
            return trio.current_time()
        record.waiting = None
        status = await runtime.inspect_container(container_id)
        record.status = status
        post_start = (container.get("lifecycle") or {}).get("postStart")
        if post_start and status is not None and status.state == "running":
            ok, why = await self._run_hook(post_start, container, container_id, budget=30.0)
            if not ok:  # kubelet kills a container whose postStart hook failed; the restart policy decides
                log.warning(
                    "node %s: pod %s: container %s: postStart hook failed: %s",
                    self.manager.node_name,
                    self.key,
                    record.name,
                    why,
                )
                await runtime.stop_container(container_id, 0)
                status = await runtime.inspect_container(container_id)
                record.status = status
        if status is not None and status.state == "running":
            self._ensure_probes(container, record, status)
        else:
            self.wake()  # exited already: handle it on the next pass
        log.info(
            "node %s: pod %s: started container %s (%s, restarts %d)",
            self.manager.node_name,
            self.key,
            record.name,
            container_id[:12],
            record.restart_count,
        )
        return math.inf

    async def _stop(self, record: ContainerRecord, status: ContainerStatus) -> None:
        self._stop_probes(record)
        record.ready = False
        await self._stop_with_hook(status, pods.grace_period(self.pod))

    async def _stop_with_hook(self, status: ContainerStatus, grace: float) -> None:
        """kubelet's kill: the preStop hook first, then SIGTERM with what is left of the grace period."""
        name = status.labels.get(LABEL_CONTAINER, "")
        container = next((c for c in self.spec.get("containers") or [] if c.get("name") == name), None)
        pre_stop = ((container or {}).get("lifecycle") or {}).get("preStop")
        if container is not None and pre_stop and grace > 0:
            began = trio.current_time()
            ok, why = await self._run_hook(pre_stop, container, status.id, budget=grace)
            if not ok:
                log.warning(
                    "node %s: pod %s: container %s: preStop hook failed: %s",
                    self.manager.node_name,
                    self.key,
                    name,
                    why,
                )
            grace = max(0.0, grace - (trio.current_time() - began))
        await self.manager.runtime.stop_container(status.id, grace)

    async def _run_hook(
        self, handler: dict[str, Any], container: dict[str, Any], container_id: str, *, budget: float
    ) -> tuple[bool, str]:
        if handler.get("sleep") is not None:
            await trio.sleep(min(budget, float(handler["sleep"].get("seconds", 0))))
            return True, "slept"
        try:
            spec = ProbeSpec.parse({**handler, "timeoutSeconds": budget})
        except ValueError as exc:
            return False, str(exc)
        host = self.pod_ip or self.manager.node_ip
        return await probe_once(self.manager.runtime, container_id, spec, container=container, host=host)

    # -- probes -------------------------------------------------------------------------------------------

    def _ensure_probes(self, container: dict[str, Any], record: ContainerRecord, status: ContainerStatus) -> None:
        if record.probes_for == status.id:
            return
        self._stop_probes(record)
        record.probes_for = status.id
        has_readiness = container.get("readinessProbe") is not None
        has_startup = container.get("startupProbe") is not None
        record.ready = not has_readiness and not has_startup
        record.started = not has_startup
        if not (has_readiness or has_startup or container.get("livenessProbe") is not None):
            return
        scope = trio.CancelScope()
        record.probe_scope = scope
        assert self._probe_nursery is not None
        self._probe_nursery.start_soon(self._probe_container, container, record, status, scope)

    def _stop_probes(self, record: ContainerRecord) -> None:
        if record.probe_scope is not None:
            record.probe_scope.cancel()
            record.probe_scope = None
        record.probes_for = ""

    async def _probe_container(
        self, container: dict[str, Any], record: ContainerRecord, status: ContainerStatus, scope: trio.CancelScope
    ) -> None:
        runtime = self.manager.runtime
        host = self.pod_ip or self.manager.node_ip
        container_id = status.id
        with scope:
            try:
                if container.get("startupProbe") is not None:
                    startup = ProbeSpec.parse(container["startupProbe"])
                    passed = trio.Event()

                    def on_startup(ok: bool, why: str) -> None:
                        if ok:
                            passed.set()
                        else:
                            record.unhealthy = f"startup probe failed: {why}"
                            self.wake()

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(
                            self._run_until, passed, runtime, container_id, startup, container, host, on_startup
                        )
                    record.started = True
                    if container.get("readinessProbe") is None:
                        record.ready = True
                    self.wake()
                async with trio.open_nursery() as nursery:
                    if container.get("livenessProbe") is not None:

                        def on_liveness(ok: bool, why: str) -> None:
                            if not ok:
                                record.unhealthy = f"liveness probe failed: {why}"
                                self.wake()

                        nursery.start_soon(
                            self._probe_forever,
                            runtime,
                            container_id,
                            ProbeSpec.parse(container["livenessProbe"]),
                            container,
                            host,
                            True,
                            on_liveness,
                        )
                    if container.get("readinessProbe") is not None:

                        def on_readiness(ok: bool, why: str) -> None:
                            record.ready = ok
                            self.wake()

                        nursery.start_soon(
                            self._probe_forever,
                            runtime,
                            container_id,
                            ProbeSpec.parse(container["readinessProbe"]),
                            container,
                            host,
                            False,
                            on_readiness,
                        )
            except ValueError as exc:
                log.warning(
                    "node %s: pod %s: container %s: bad probe: %s", self.manager.node_name, self.key, record.name, exc
                )

    @staticmethod
    async def _probe_forever(
        runtime: Any,
        container_id: str,
        spec: ProbeSpec,
        container: dict[str, Any],
        host: str,
        initial: bool,
        on_change: Any,
    ) -> None:
        await run_probe(
            runtime, container_id, spec, container=container, host=host, initial=initial, on_change=on_change
        )

    @staticmethod
    async def _run_until(
        done: trio.Event,
        runtime: Any,
        container_id: str,
        spec: ProbeSpec,
        container: dict[str, Any],
        host: str,
        on_change: Any,
    ) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: run_probe(
                    runtime, container_id, spec, container=container, host=host, initial=None, on_change=on_change
                )
            )
            await done.wait()
            nursery.cancel_scope.cancel()

    # -- termination ----------------------------------------------------------------------------------------

    async def _terminate(self, grace: float) -> None:
        """Kill and remove everything of the pod, retrying while the runtime fails (it may be restarting)."""
        delay = 0.5
        while True:
            try:
                await self._kill_all(grace)
                return
            except Exception as exc:
                log.warning(
                    "node %s: pod %s: terminating failed (%s: %s); retrying in %.1f s",
                    self.manager.node_name,
                    self.key,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await trio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _kill_all(self, grace: float) -> None:
        runtime = self.manager.runtime
        found = await runtime.list_containers({LABEL_UID: self.uid})
        for record in self.records.values():
            self._stop_probes(record)

        async def kill(container: ContainerStatus) -> None:
            if container.state == "running":
                await self._stop_with_hook(container, grace)
            await runtime.remove_container(container.id)

        async with trio.open_nursery() as nursery:
            for container in found:
                nursery.start_soon(kill, container)
        await runtime.remove_pod_sandbox(self.uid)
        await trio.to_thread.run_sync(shutil.rmtree, self.manager.pods_dir / self.uid, True)
        log.info("node %s: pod %s (%s) terminated with grace %gs", self.manager.node_name, self.key, self.uid, grace)

    # -- status -------------------------------------------------------------------------------------------

    def _terminated(self, status: ContainerStatus) -> dict[str, Any]:
        terminated: dict[str, Any] = {
            "exitCode": status.exit_code if status.exit_code is not None else 0,
            "reason": status.reason or ("Completed" if status.exit_code == 0 else "Error"),
            "startedAt": _short_time(status.started_at) or None,
            "finishedAt": _short_time(status.finished_at) or None,
            "containerID": f"{self.manager.runtime.id_scheme}://{status.id}",
        }
        if status.message:
            terminated["message"] = status.message
        return {"terminated": terminated}

    def container_statuses(self, kind: str = "containers", pending: str = "ContainerCreating") -> list[dict[str, Any]]:
        statuses = []
        for container in self.spec.get(kind) or []:
            record = self.records.get(container["name"]) or ContainerRecord(container["name"])
            status = record.status if record.id else None
            entry: dict[str, Any] = {
                "name": record.name,
                "image": container.get("image", ""),
                "imageID": status.image_id if status else "",
                "ready": bool(record.ready and status is not None and status.state == "running"),
                "restartCount": record.restart_count,
                "started": bool(status is not None and status.state == "running" and record.started),
                "lastState": record.last_terminated or {},
            }
            if status is not None:
                entry["containerID"] = f"{self.manager.runtime.id_scheme}://{status.id}"
            if record.waiting is not None:
                entry["state"] = {"waiting": {"reason": record.waiting[0], "message": record.waiting[1]}}
            elif status is None:
                entry["state"] = {"waiting": {"reason": pending}}
            elif status.state == "running":
                entry["state"] = {"running": {"startedAt": _short_time(status.started_at)}}
            elif status.state == "exited":
                entry["state"] = self._terminated(status)
            else:
                entry["state"] = {"waiting": {"reason": "ContainerCreating"}}
            statuses.append(entry)
        return statuses

    def _condition(self, kind: str, ok: bool, reason: str = "") -> dict[str, Any]:
        value = "True" if ok else "False"
        previous = self.condition_times.get(kind)
        if previous is None or previous[0] != value:
            self.condition_times[kind] = (value, rfc3339())
        condition: dict[str, Any] = {
            "type": kind,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": self.condition_times[kind][1],
        }
        if reason and not ok:
            condition["reason"] = reason
        return condition

    def status(self) -> dict[str, Any]:
        statuses = self.container_statuses(pending="ContainerCreating" if self.initialized else "PodInitializing")
        if self.init_failed:
            phase = "Failed"
        elif not self.initialized:
            phase = "Pending"
        else:
            phase = pods.pod_phase(self.restart_policy, statuses)
        all_ready = bool(statuses) and all(s["ready"] for s in statuses)
        not_ready = [s["name"] for s in statuses if not s["ready"]]
        reason = "ContainersNotReady" if not_ready else ""
        if phase in ("Succeeded", "Failed"):
            reason = "PodCompleted"
        network = self.manager.network_for(self.pod)
        if network == "host":
            self.pod_ip = self.manager.node_ip
        else:
            ips = [r.status.ip for r in self.records.values() if r.status is not None and r.status.ip]
            self.pod_ip = ips[0] if ips else ""
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": [
                self._condition("PodReadyToStartContainers", True),
                self._condition("Initialized", self.initialized, "ContainersNotInitialized"),
                self._condition("Ready", all_ready, reason),
                self._condition("ContainersReady", all_ready, reason),
                self._condition("PodScheduled", True),
            ],
            "hostIP": self.manager.node_ip,
            "hostIPs": [{"ip": self.manager.node_ip}],
            "startTime": self.start_time,
            "containerStatuses": statuses,
            "qosClass": "BestEffort",
        }
        if self.spec.get("initContainers"):
            status["initContainerStatuses"] = self.container_statuses("initContainers", "PodInitializing")
        if self.pod_ip:
            status["podIP"] = self.pod_ip
            status["podIPs"] = [{"ip": self.pod_ip}]
        if self.pod_error:
            status["message"] = self.pod_error
        return status

    async def _publish(self, *, force: bool = False) -> None:
        status = self.status()
        if force or status != self.last_status:
            self.last_status = json.loads(json.dumps(status))
            await self.manager.report_status(self, status)

    async def republish(self) -> None:
        if self.last_status is not None and self.terminating is None:
            await self.manager.report_status(self, self.last_status)

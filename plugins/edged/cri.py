"""The ``cri`` container runtime: containerd (or any CRI runtime) over the Kubernetes CRI gRPC API.

The stubs are generated code vendored in ``cri_api/`` (Kubernetes' ``runtime.v1``). grpcio's blocking
stubs are thread-safe, so every call runs in a worker thread (``trio.to_thread``), never on the trio
thread. edged's interface is per container; CRI's is per pod sandbox, so this runtime keeps one sandbox per
pod UID: made when the pod's first container is created, stopped and removed with its last one.

With ``startService`` the runtime starts a private containerd (root, state and socket in the data
directory, ``restrict_oom_score_adj`` for hosts without CAP_SYS_RESOURCE, the ``native`` snapshotter so
nothing stays mounted); otherwise it talks to ``endpoint`` (``/run/containerd/containerd.sock``).
Pods without ``hostNetwork`` need a CNI configuration (``cniConfDir``/``cniBinDir``) in that case.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
import trio

from .cri_api import cri_runtime_v1_pb2 as cri
from .cri_api import cri_runtime_v1_pb2_grpc as cri_grpc
from .runtime import (
    LABEL_NAMESPACE,
    LABEL_POD,
    LABEL_UID,
    ContainerConfig,
    ContainerRuntime,
    ContainerStatus,
    ContainerUsage,
    ImageInfo,
    RuntimeError_,
)

__all__ = ["CRIRuntime", "parse_cri_log"]

log = logging.getLogger("kubeedge.edged.cri")

T = TypeVar("T")

STATES: dict[int, Any] = {
    cri.CONTAINER_CREATED: "created",
    cri.CONTAINER_RUNNING: "running",
    cri.CONTAINER_EXITED: "exited",
    cri.CONTAINER_UNKNOWN: "unknown",
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "endpoint": {"type": "string", "description": "unix socket of the CRI runtime"},
        "startService": {"type": "boolean", "description": "start a private containerd"},
        "containerdPath": {"type": "string"},
        "sandboxImage": {"type": "string"},
        "cniConfDir": {"type": "string"},
        "cniBinDir": {"type": "string"},
        "timeout": {"type": "number", "exclusiveMinimum": 0},
    },
}


def parse_cri_log(text: str) -> str:
    """CRI log lines (``<time> <stream> <P|F> <text>``) back to the container's output."""
    out: list[str] = []
    for line in text.splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 3:
            continue
        content = parts[3] if len(parts) == 4 else ""
        out.append(content if parts[2] == "P" else content + "\n")
    return "".join(out)


def _rfc3339(nanoseconds: int) -> str:
    if nanoseconds <= 0:
        return ""
    seconds, rest = divmod(nanoseconds, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{rest:09d}Z"


class CRIRuntime(ContainerRuntime):
    name = "cri"
    id_scheme = "containerd"

    def __init__(self, config: dict[str, Any], *, data_dir: Path, node_name: str) -> None:
        super().__init__(config, data_dir=data_dir, node_name=node_name)
        self.home = data_dir / "containerd"
        self.start_service = bool(config.get("startService", False))
        self.timeout = float(config.get("timeout", 60.0))
        self.sandbox_image = str(config.get("sandboxImage") or "localhost/pause:latest")
        self.log_dir = data_dir / "pod-logs"
        if self.start_service:
            # unix socket paths are short (107 bytes): the socket and state live in a short temp dir
            self.state_dir = Path(tempfile.mkdtemp(prefix="ke-ctrd-", dir="/tmp"))
            self.endpoint = str(config.get("endpoint") or self.state_dir / "containerd.sock")
        else:
            self.state_dir = Path()
            self.endpoint = str(config.get("endpoint") or "/run/containerd/containerd.sock")
        self._channel: grpc.Channel | None = None
        self._runtime: cri_grpc.RuntimeServiceStub | None = None
        self._images: cri_grpc.ImageServiceStub | None = None
        self._sandboxes: dict[str, str] = {}  # pod uid -> sandbox id
        self._sandbox_lock = trio.Lock()

    # -- service -------------------------------------------------------------------------------------

    def containerd_config(self) -> str:
        root = self.home / "root"
        cni_conf = self.config.get("cniConfDir") or str(self.home / "cni")
        Path(cni_conf).mkdir(parents=True, exist_ok=True)
        return f"""version = 2
root = "{root}"
state = "{self.state_dir / "state"}"
[grpc]
  address = "{self.endpoint}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.sandbox_image}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{self.config.get("cniBinDir") or "/usr/lib/cni"}"
    conf_dir = "{cni_conf}"
"""

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        process: trio.Process | None = None
        try:
            if self.start_service:
                self.home.mkdir(parents=True, exist_ok=True)
                config = self.home / "containerd.toml"
                config.write_text(self.containerd_config())
                with open(self.home / "containerd.log", "ab") as service_log:  # noqa: ASYNC230 - instant
                    process = await trio.lowlevel.open_process(
                        [self.config.get("containerdPath") or "containerd", "--config", str(config)],
                        stdin=subprocess.DEVNULL,
                        stdout=service_log,
                        stderr=service_log,
                    )
                log.info("cri: private containerd pid %d on %s", process.pid, self.endpoint)
            self._channel = grpc.insecure_channel(f"unix://{self.endpoint}")
            self._runtime = cri_grpc.RuntimeServiceStub(self._channel)
            self._images = cri_grpc.ImageServiceStub(self._channel)
            ready = grpc.channel_ready_future(self._channel)
            try:
                await trio.to_thread.run_sync(ready.result, 30.0, abandon_on_cancel=True)
            except grpc.FutureTimeoutError:
                log_file = self.home / "containerd.log"
                raise RuntimeError_(f"cri: no CRI service on {self.endpoint} (see {log_file})") from None
            version = await self.version()
            log.info("cri: %s", version)
            await self._rediscover()
            task_status.started()
            if process is not None:
                code = await process.wait()
                raise RuntimeError_(f"cri: containerd exited with status {code}")
            await trio.sleep_forever()
        finally:
            if self._channel is not None:
                self._channel.close()
                self._channel = None
            if process is not None:
                with trio.CancelScope(shield=True):
                    if process.returncode is None:
                        process.terminate()
                        with trio.move_on_after(10):
                            await process.wait()
                        if process.returncode is None:
                            process.kill()
                            await process.wait()
            if self.start_service:
                shutil.rmtree(self.state_dir, ignore_errors=True)

    async def _call(self, what: str, function: Callable[..., T], request: Any, timeout: float | None = None) -> T:  # noqa: ASYNC109
        def call() -> T:
            return function(request, timeout=timeout or self.timeout)

        try:
            return await trio.to_thread.run_sync(call, abandon_on_cancel=True)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            raise RuntimeError_(f"cri: {what}: {details}", not_found=code == grpc.StatusCode.NOT_FOUND) from None

    @property
    def runtime(self) -> cri_grpc.RuntimeServiceStub:
        if self._runtime is None:
            raise RuntimeError_("cri: the runtime is not running (call run() first)")
        return self._runtime

    @property
    def images(self) -> cri_grpc.ImageServiceStub:
        if self._images is None:
            raise RuntimeError_("cri: the runtime is not running (call run() first)")
        return self._images

    async def version(self) -> str:
        reply = await self._call("version", self.runtime.Version, cri.VersionRequest(version="v1"))
        return f"{reply.runtime_name} {reply.runtime_version} (CRI {reply.runtime_api_version})"

    async def _rediscover(self) -> None:
        reply = await self._call("list sandboxes", self.runtime.ListPodSandbox, cri.ListPodSandboxRequest())
        for sandbox in reply.items:
            if sandbox.state == cri.SANDBOX_READY and sandbox.metadata.uid:
                self._sandboxes[sandbox.metadata.uid] = sandbox.id

    # -- images --------------------------------------------------------------------------------------

    async def image_present(self, image: str) -> bool:
        reply = await self._call(
            "image status", self.images.ImageStatus, cri.ImageStatusRequest(image=cri.ImageSpec(image=image))
        )
        return bool(reply.image.id)

    async def pull_image(self, image: str) -> None:
        await self._call(
            f"pull {image}", self.images.PullImage, cri.PullImageRequest(image=cri.ImageSpec(image=image)), timeout=600
        )

    async def list_images(self) -> list[ImageInfo]:
        reply = await self._call("list images", self.images.ListImages, cri.ListImagesRequest())
        return [
            ImageInfo(id=i.id.removeprefix("sha256:"), tags=list(i.repo_tags), size=int(i.size), created=0.0)
            for i in reply.images
        ]

    async def remove_image(self, image_id: str) -> None:
        await self._call(
            f"remove image {image_id}",
            self.images.RemoveImage,
            cri.RemoveImageRequest(image=cri.ImageSpec(image=image_id)),
        )

    async def image_fs(self) -> Path:
        reply = await self._call("image fs", self.images.ImageFsInfo, cri.ImageFsInfoRequest())
        for usage in reply.image_filesystems:
            if usage.fs_id.mountpoint:
                return Path(usage.fs_id.mountpoint)
        return self.home

    # -- sandboxes -----------------------------------------------------------------------------------

    def _sandbox_config(self, config: ContainerConfig) -> cri.PodSandboxConfig:
        labels = config.labels
        uid = labels.get(LABEL_UID, "")
        network = cri.NODE if config.network == "host" else cri.POD
        return cri.PodSandboxConfig(
            metadata=cri.PodSandboxMetadata(
                name=labels.get(LABEL_POD, ""), uid=uid, namespace=labels.get(LABEL_NAMESPACE, ""), attempt=0
            ),
            hostname=config.hostname if network == cri.POD else "",
            log_directory=str(self.log_dir / uid),
            labels={k: v for k, v in labels.items() if k in (LABEL_POD, LABEL_NAMESPACE, LABEL_UID)}
            | {k: v for k, v in labels.items() if k.startswith("io.kubeedge.")},
            port_mappings=[
                cri.PortMapping(
                    protocol={"tcp": cri.TCP, "udp": cri.UDP, "sctp": cri.SCTP}.get(p.protocol, cri.TCP),
                    container_port=p.container_port,
                    host_port=p.host_port,
                    host_ip=p.host_ip,
                )
                for p in config.ports
                if p.host_port
            ],
            linux=cri.LinuxPodSandboxConfig(
                security_context=cri.LinuxSandboxSecurityContext(
                    namespace_options=cri.NamespaceOption(network=network, pid=cri.CONTAINER, ipc=cri.POD),
                    privileged=config.privileged,
                )
            ),
        )

    async def _sandbox_for(self, config: ContainerConfig) -> tuple[str, cri.PodSandboxConfig]:
        uid = config.labels.get(LABEL_UID, "")
        sandbox_config = self._sandbox_config(config)
        async with self._sandbox_lock:
            sandbox_id = self._sandboxes.get(uid)
            if sandbox_id is None:
                (self.log_dir / uid).mkdir(parents=True, exist_ok=True)
                reply = await self._call(
                    f"run sandbox for {uid}",
                    self.runtime.RunPodSandbox,
                    cri.RunPodSandboxRequest(config=sandbox_config),
                )
                sandbox_id = reply.pod_sandbox_id
                self._sandboxes[uid] = sandbox_id
        return sandbox_id, sandbox_config

    async def pod_sandboxes(self, labels: dict[str, str]) -> dict[str, str]:
        reply = await self._call(
            "list sandboxes",
            self.runtime.ListPodSandbox,
            cri.ListPodSandboxRequest(filter=cri.PodSandboxFilter(label_selector=labels)),
        )
        return {sandbox.metadata.uid: sandbox.id for sandbox in reply.items if sandbox.metadata.uid}

    async def remove_pod_sandbox(self, uid: str) -> None:
        if uid not in self._sandboxes:
            self._sandboxes.update(await self.pod_sandboxes({LABEL_UID: uid}))
        await self._release_sandbox(uid)

    async def _release_sandbox(self, uid: str) -> None:
        async with self._sandbox_lock:
            sandbox_id = self._sandboxes.get(uid)
            if sandbox_id is None:
                return
            reply = await self._call(
                "list containers",
                self.runtime.ListContainers,
                cri.ListContainersRequest(filter=cri.ContainerFilter(pod_sandbox_id=sandbox_id)),
            )
            if reply.containers:
                return
            await self._call(
                "stop sandbox", self.runtime.StopPodSandbox, cri.StopPodSandboxRequest(pod_sandbox_id=sandbox_id)
            )
            await self._call(
                "remove sandbox", self.runtime.RemovePodSandbox, cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id)
            )
            del self._sandboxes[uid]

    # -- containers ----------------------------------------------------------------------------------

    async def create_container(self, config: ContainerConfig) -> str:
        sandbox_id, sandbox_config = await self._sandbox_for(config)
        user: dict[str, Any] = {}
        if config.user:
            uid_text, _, gid_text = config.user.partition(":")
            if uid_text.isdigit():
                user["run_as_user"] = cri.Int64Value(value=int(uid_text))
            if gid_text.isdigit():
                user["run_as_group"] = cri.Int64Value(value=int(gid_text))
        container_name = config.labels.get("io.kubernetes.container.name", config.name)
        attempt = int(config.labels.get("io.kubernetes.container.restartCount", "0") or 0)
        request = cri.CreateContainerRequest(
            pod_sandbox_id=sandbox_id,
            sandbox_config=sandbox_config,
            config=cri.ContainerConfig(
                metadata=cri.ContainerMetadata(name=container_name, attempt=attempt),
                image=cri.ImageSpec(image=config.image),
                # Kubernetes semantics, as kubelet passes them: command replaces the entrypoint, args the CMD
                command=config.command or [],
                args=config.args or [],
                working_dir=config.working_dir,
                envs=[cri.KeyValue(key=k, value=v.encode()) for k, v in config.env.items()],
                mounts=[
                    cri.Mount(container_path=m.container_path, host_path=m.host_path, readonly=m.read_only)
                    for m in config.mounts
                ],
                labels=config.labels,
                log_path=f"{container_name}/{attempt}.log",
                stdin=config.stdin,
                tty=config.tty,
                linux=cri.LinuxContainerConfig(
                    resources=cri.LinuxContainerResources(
                        memory_limit_in_bytes=config.memory_limit,
                        cpu_period=100_000 if config.cpu_limit else 0,
                        cpu_quota=int(config.cpu_limit * 100_000),
                        cpu_shares=config.cpu_shares,
                    ),
                    security_context=cri.LinuxContainerSecurityContext(privileged=config.privileged, **user),
                ),
            ),
        )
        reply = await self._call(f"create container {config.name}", self.runtime.CreateContainer, request)
        return str(reply.container_id)

    async def start_container(self, container_id: str) -> None:
        await self._call(
            f"start {container_id[:12]}",
            self.runtime.StartContainer,
            cri.StartContainerRequest(container_id=container_id),
        )

    async def stop_container(self, container_id: str, grace_seconds: float) -> None:
        grace = max(0, int(-(-grace_seconds // 1)))
        try:
            await self._call(
                f"stop {container_id[:12]}",
                self.runtime.StopContainer,
                cri.StopContainerRequest(container_id=container_id, timeout=grace),
                timeout=self.timeout + grace,
            )
        except RuntimeError_ as exc:
            if not exc.not_found:
                raise

    async def remove_container(self, container_id: str) -> None:
        status = await self.inspect_container(container_id)
        if status is None:
            return
        try:
            await self._call(
                f"remove {container_id[:12]}",
                self.runtime.RemoveContainer,
                cri.RemoveContainerRequest(container_id=container_id),
            )
        except RuntimeError_ as exc:
            if not exc.not_found:
                raise

    async def inspect_container(self, container_id: str) -> ContainerStatus | None:
        try:
            reply = await self._call(
                f"status of {container_id[:12]}",
                self.runtime.ContainerStatus,
                cri.ContainerStatusRequest(container_id=container_id),
            )
        except RuntimeError_ as exc:
            if exc.not_found:
                return None
            raise
        status = reply.status
        state = STATES.get(status.state, "unknown")
        result = ContainerStatus(
            id=status.id,
            name=status.metadata.name,
            state=state,
            labels=dict(status.labels),
            image=status.image.image,
            image_id=status.image_ref,
            started_at=_rfc3339(status.started_at),
            finished_at=_rfc3339(status.finished_at),
            message=status.message,
        )
        if state == "exited":
            result.exit_code = int(status.exit_code)
            result.reason = status.reason or ("Completed" if status.exit_code == 0 else "Error")
        uid = result.labels.get(LABEL_UID, "")
        sandbox_id = self._sandboxes.get(uid)
        if sandbox_id:
            try:
                sandbox = await self._call(
                    "sandbox status",
                    self.runtime.PodSandboxStatus,
                    cri.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id),
                )
                result.ip = sandbox.status.network.ip
            except RuntimeError_:
                pass
        return result

    async def list_containers(self, labels: dict[str, str]) -> list[ContainerStatus]:
        reply = await self._call(
            "list containers",
            self.runtime.ListContainers,
            cri.ListContainersRequest(filter=cri.ContainerFilter(label_selector=labels)),
        )
        return [
            ContainerStatus(
                id=c.id,
                name=c.metadata.name,
                state=STATES.get(c.state, "unknown"),
                labels=dict(c.labels),
                image=c.image.image,
                image_id=c.image_ref,
            )
            for c in reply.containers
        ]

    async def exec_in_container(self, container_id: str, command: list[str], timeout: float) -> tuple[int, bytes]:  # noqa: ASYNC109
        seconds = max(1, int(-(-timeout // 1)))
        reply = await self._call(
            f"exec in {container_id[:12]}",
            self.runtime.ExecSync,
            cri.ExecSyncRequest(container_id=container_id, cmd=command, timeout=seconds),
            timeout=timeout + 5,
        )
        return int(reply.exit_code), bytes(reply.stdout) + bytes(reply.stderr)

    async def container_stats(self, container_id: str) -> ContainerUsage | None:
        try:
            reply = await self._call(
                f"stats of {container_id[:12]}",
                self.runtime.ContainerStats,
                cri.ContainerStatsRequest(container_id=container_id),
            )
        except RuntimeError_ as exc:
            if exc.not_found:
                return None
            raise
        stats = reply.stats
        if not stats.HasField("cpu") or not stats.cpu.HasField("usage_core_nano_seconds"):
            return None
        memory = stats.memory if stats.HasField("memory") else None

        def value(field: str) -> int | None:
            if memory is None or not memory.HasField(field):
                return None
            return int(getattr(memory, field).value)

        usage = value("usage_bytes")
        working_set = value("working_set_bytes")
        stamp = stats.cpu.timestamp or (memory.timestamp if memory is not None else 0)
        return ContainerUsage(
            timestamp=stamp / 1e9 if stamp > 0 else time.time(),
            cpu_usage_ns=int(stats.cpu.usage_core_nano_seconds.value),
            memory_usage_bytes=usage if usage is not None else (working_set or 0),
            memory_working_set_bytes=working_set if working_set is not None else (usage or 0),
            memory_rss_bytes=value("rss_bytes"),
        )

    async def container_logs(self, container_id: str, tail: int | None = None) -> str:
        reply = await self._call(
            f"status of {container_id[:12]}",
            self.runtime.ContainerStatus,
            cri.ContainerStatusRequest(container_id=container_id),
        )
        path = Path(reply.status.log_path)
        text = await trio.to_thread.run_sync(lambda: path.read_text(errors="replace") if path.is_file() else "")
        output = parse_cri_log(text)
        if tail is not None:
            output = "".join(output.splitlines(keepends=True)[-tail:]) if tail > 0 else ""
        return output


def import_image(ctr_address: str, archive: Path, *, namespace: str = "k8s.io") -> None:
    """Import a docker-archive into containerd (``ctr images import``); blocking."""
    result = subprocess.run(
        ["ctr", "--address", ctr_address, "-n", namespace, "images", "import", "--snapshotter", "native", str(archive)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    if result.returncode != 0:
        raise OSError(f"ctr images import {archive} failed: {result.stderr.strip()}")

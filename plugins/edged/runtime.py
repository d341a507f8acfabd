"""The container-runtime contract edged drives, and the values that cross it.

A runtime plugin returns classes implementing :class:`ContainerRuntime` from the
``kubeedge_container_runtime`` hook; the profile's ``modules.edged.runtime`` names one. edged never looks
past this interface, so podman (Docker-compatible REST), containerd (CRI) and a third party's runtime
are interchangeable. Containers carry the labels in :data:`LABELS` so edged can find its own again after a
restart, whatever the runtime.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import trio

__all__ = [
    "LABEL_CONTAINER",
    "LABEL_HASH",
    "LABEL_MANAGED",
    "LABEL_NAMESPACE",
    "LABEL_NODE",
    "LABEL_POD",
    "LABEL_RESTART_COUNT",
    "LABEL_UID",
    "ContainerConfig",
    "ContainerRuntime",
    "ContainerStatus",
    "ContainerUsage",
    "ImageInfo",
    "Mount",
    "PortMapping",
    "RuntimeError_",
    "epoch_seconds",
]

# Kubelet's label names, so `podman ps --filter label=io.kubernetes.pod.name=x` works as users expect.
LABEL_MANAGED = "io.kubeedge.edged.managed"
LABEL_NODE = "io.kubeedge.node"  # several edge nodes may share one podman storage (tests, demos)
LABEL_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_POD = "io.kubernetes.pod.name"
LABEL_UID = "io.kubernetes.pod.uid"
LABEL_CONTAINER = "io.kubernetes.container.name"
LABEL_HASH = "io.kubernetes.container.hash"
LABEL_RESTART_COUNT = "io.kubernetes.container.restartCount"

State = Literal["created", "running", "exited", "unknown"]


def epoch_seconds(value: str) -> float | None:
    """An RFC 3339 time as runtimes write them (up to nanoseconds, ``Z`` or an offset) in seconds since the
    epoch; None when empty, Go's zero time, or unreadable."""
    from datetime import datetime

    if not value or value.startswith("0001-01-01"):
        return None
    head, zone, fraction = value[:19], value[19:], 0.0
    if zone.startswith("."):
        digits = zone[1:]
        end = len(digits) - len(digits.lstrip("0123456789"))
        fraction = float("0." + digits[:end]) if end else 0.0
        zone = digits[end:]
    if zone in ("Z", "z", ""):
        zone = "+00:00"
    try:
        return datetime.fromisoformat(head + zone).timestamp() + fraction
    except ValueError:
        return None


class RuntimeError_(Exception):
    """A runtime call failed; the text says which call, on what, and the runtime's own words."""

    def __init__(self, message: str, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


@dataclass(frozen=True)
class Mount:
    host_path: str
    container_path: str
    read_only: bool = False


@dataclass(frozen=True)
class PortMapping:
    container_port: int
    host_port: int = 0
    protocol: str = "tcp"
    host_ip: str = ""


@dataclass
class ContainerConfig:
    """Everything a runtime needs to create one container of a pod."""

    name: str
    image: str
    command: list[str] | None = None  # Kubernetes `command`: replaces the image's entrypoint
    args: list[str] | None = None  # Kubernetes `args`: replaces the image's CMD
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    ports: list[PortMapping] = field(default_factory=list)
    network: str = "none"  # "host" | "none" | "bridge" | "container:<id>"
    hostname: str = ""
    user: str = ""
    privileged: bool = False
    tty: bool = False
    stdin: bool = False
    pod_ports: list[PortMapping] = field(default_factory=list)  # every container's ports: the sandbox's
    memory_limit: int = 0  # bytes; 0 = none
    cpu_limit: float = 0.0  # cores; 0 = none
    cpu_shares: int = 0  # relative weight from the CPU request (kubelet: 1024 per core); 0 = default


@dataclass
class ContainerStatus:
    id: str
    name: str
    state: State
    labels: dict[str, str] = field(default_factory=dict)
    image: str = ""
    image_id: str = ""
    exit_code: int | None = None
    started_at: str = ""  # RFC 3339, empty when never started
    finished_at: str = ""
    reason: str = ""  # "OOMKilled", "Error", "Completed" for exited containers
    message: str = ""
    ip: str = ""
    pid: int = 0


@dataclass
class ContainerUsage:
    """One sample of a running container's resource use (what kubelet's Summary API reports per container).

    ``None`` means the runtime does not know (never invented); the network numbers are the container's
    network namespace, summed over its interfaces.
    """

    timestamp: float  # seconds since the epoch, when the runtime read the numbers
    cpu_usage_ns: int  # cumulative CPU time, core-nanoseconds
    memory_usage_bytes: int
    memory_working_set_bytes: int  # usage minus inactive file pages, as kubelet counts it
    memory_rss_bytes: int | None = None
    rx_bytes: int | None = None
    tx_bytes: int | None = None
    rx_errors: int | None = None
    tx_errors: int | None = None


@dataclass
class ImageInfo:
    id: str
    tags: list[str]
    size: int
    created: float  # seconds since the epoch
    containers: int = 0  # how many containers (any state) use it, when the runtime knows


class ContainerRuntime(abc.ABC):
    """One container runtime. Built with its profile section, served by :meth:`run` inside edged."""

    name: str = ""
    #: prefix of ``containerID`` in pod status, as kubelet writes ``docker://`` or ``containerd://``
    id_scheme: str = ""

    def __init__(self, config: dict[str, Any], *, data_dir: Path, node_name: str) -> None:
        self.config = config
        self.data_dir = data_dir
        self.node_name = node_name

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve: start what the runtime needs (a service, a connection), call ``started()``, then wait."""
        task_status.started()
        await trio.sleep_forever()

    @abc.abstractmethod
    async def version(self) -> str: ...

    # -- images --------------------------------------------------------------------------------------

    @abc.abstractmethod
    async def image_present(self, image: str) -> bool: ...

    @abc.abstractmethod
    async def pull_image(self, image: str) -> None: ...

    @abc.abstractmethod
    async def list_images(self) -> list[ImageInfo]: ...

    @abc.abstractmethod
    async def remove_image(self, image_id: str) -> None: ...

    @abc.abstractmethod
    async def image_fs(self) -> Path:
        """The directory holding the runtime's images (its disk is what image GC watches)."""

    # -- containers ----------------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_container(self, config: ContainerConfig) -> str:
        """Create (not start) a container; return its id."""

    @abc.abstractmethod
    async def start_container(self, container_id: str) -> None: ...

    @abc.abstractmethod
    async def stop_container(self, container_id: str, grace_seconds: float) -> None:
        """SIGTERM, then SIGKILL after ``grace_seconds``; a container already stopped is fine."""

    @abc.abstractmethod
    async def remove_container(self, container_id: str) -> None:
        """Remove a container, killing it at once if it still runs; an absent one is fine."""

    @abc.abstractmethod
    async def inspect_container(self, container_id: str) -> ContainerStatus | None:
        """The container's full status, or None when it does not exist."""

    @abc.abstractmethod
    async def list_containers(self, labels: dict[str, str]) -> list[ContainerStatus]:
        """Every container (running or not) carrying all of ``labels``.

        The entries may be summaries (``exit_code`` None); :meth:`inspect_container` gives the details.
        """

    @abc.abstractmethod
    async def exec_in_container(self, container_id: str, command: list[str], timeout: float) -> tuple[int, bytes]:  # noqa: ASYNC109
        """Run ``command`` in the container; return (exit code, stdout+stderr). Raises on timeout."""

    @abc.abstractmethod
    async def container_logs(self, container_id: str, tail: int | None = None) -> str: ...

    async def container_stats(self, container_id: str) -> ContainerUsage | None:
        """One sample of a running container's CPU, memory and network use; None when the runtime cannot
        report it (this default) or the container is gone."""
        return None

    # -- pod sandboxes (optional: runtimes that group a pod's containers, as CRI and podman pods do) -----

    async def pod_sandboxes(self, labels: dict[str, str]) -> dict[str, str]:
        """Sandboxes carrying all of ``labels``: pod UID -> sandbox id. Runtimes without sandboxes: none."""
        return {}

    async def remove_pod_sandbox(self, uid: str) -> None:
        """Remove the pod's sandbox (its containers are gone already); absent is fine."""
        return None

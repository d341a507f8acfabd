"""kubelet's stats endpoints, answered by the edge: ``/stats/summary`` and ``/metrics/resource``.

``/stats/summary`` is kubelet's Summary API (``stats/v1alpha1``, JSON): the node from ``/proc`` (CPU from
``/proc/stat``, memory from ``/proc/meminfo`` and ``/proc/vmstat``, network from ``/proc/net/dev`` with the
default route's interface first, the file systems by ``statvfs``), this process as the ``kubelet`` system
container, and every running container edged started on this node, grouped into pods by kubelet's labels,
with the numbers the runtime reports (:meth:`ContainerRuntime.container_stats`). ``/metrics/resource`` is
the same sample in Prometheus text with kubelet's resource metric names, what metrics-server scrapes.

``usageNanoCores`` is a rate: the collector keeps the previous sample of every CPU counter and divides by
the time between them when that sample is 0.2 s to 10 min old; otherwise it samples again 0.3 s later.
Numbers a source cannot give are left out, never invented. The parsers are pure functions of file text.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import trio

from kubeedge.plugins.common.stream_protocol import MetricsRequest

__all__ = [
    "RESOURCE_CONTENT_TYPE",
    "SUMMARY_CONTENT_TYPE",
    "ContainerSample",
    "FsStats",
    "HostSample",
    "Interface",
    "PidStat",
    "PodSample",
    "Snapshot",
    "StatsCollector",
    "StatsError",
    "default_interface",
    "fs_stats",
    "parse_meminfo",
    "parse_net_dev",
    "parse_pid_stat",
    "parse_proc_stat",
    "read_host",
    "resource_metrics",
    "rfc3339",
    "summary",
]

log = logging.getLogger("kubeedge.edgestream")

SUMMARY_PATH, RESOURCE_PATH = MetricsRequest.PATHS
SUMMARY_CONTENT_TYPE = "application/json"
RESOURCE_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# kubelet's label names, which edged writes on every container it creates
LABEL_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_POD = "io.kubernetes.pod.name"
LABEL_UID = "io.kubernetes.pod.uid"
LABEL_CONTAINER = "io.kubernetes.container.name"
LABEL_NODE = "io.kubeedge.node"

RATE_MIN_SECONDS, RATE_MAX_SECONDS = 0.2, 600.0
RESAMPLE_SECONDS = 0.3
LAST_RATES_MAX_AGE = 10.0  # a request within this of the previous one may reuse its rates
POD_INTERFACE = "eth0"  # kubelet's name for a pod's network


class StatsError(Exception):
    """A stats request that cannot be answered; ``code`` is the HTTP status for the cloud's client."""

    def __init__(self, message: str, code: int = 500) -> None:
        super().__init__(message)
        self.code = code


# -- /proc parsers (pure) ---------------------------------------------------------------------------------


def _ticks() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK")) or 100
    except (ValueError, OSError):
        return 100


def _page_size() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) or 4096
    except (ValueError, OSError):
        return 4096


def parse_proc_stat(text: str, ticks_per_second: int = 100) -> tuple[int | None, int | None]:
    """``/proc/stat``: (CPU time spent busy by all cores in nanoseconds, boot time in epoch seconds).

    Busy is user + nice + system + irq + softirq + steal (guest time is inside user already); idle and
    iowait are not. Either value is None when its line is missing or unreadable.
    """
    busy: int | None = None
    boot: int | None = None
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "cpu" and len(parts) >= 4:
            try:
                values = [int(v) for v in parts[1:]]
            except ValueError:
                continue
            jiffies = sum(values[i] for i in (0, 1, 2, 5, 6, 7) if i < len(values))
            busy = jiffies * 1_000_000_000 // ticks_per_second
        elif parts[0] == "btime" and len(parts) == 2 and parts[1].isdigit():
            boot = int(parts[1])
    return busy, boot


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` (or ``/proc/vmstat``): name -> value, ``kB`` values in bytes."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":") if ":" in line else line.partition(" ")
        parts = rest.split()
        if not name or not parts:
            continue
        try:
            value = int(parts[0])
        except ValueError:
            continue
        out[name.strip()] = value * 1024 if len(parts) > 1 and parts[1].lower() == "kb" else value
    return out


@dataclass(frozen=True)
class Interface:
    name: str
    rx_bytes: int
    rx_errors: int
    tx_bytes: int
    tx_errors: int


def parse_net_dev(text: str) -> dict[str, Interface]:
    """``/proc/net/dev``: interface name -> its counters (header and malformed lines skipped)."""
    out: dict[str, Interface] = {}
    for line in text.splitlines():
        name, colon, rest = line.partition(":")
        if not colon:
            continue
        fields = rest.split()
        if len(fields) < 11:
            continue
        try:
            rx_bytes, rx_errors, tx_bytes, tx_errors = (int(fields[i]) for i in (0, 2, 8, 10))
        except ValueError:
            continue
        out[name.strip()] = Interface(name.strip(), rx_bytes, rx_errors, tx_bytes, tx_errors)
    return out


def default_interface(route_text: str) -> str | None:
    """``/proc/net/route``: the interface of the default route (destination 0, up), lowest metric first."""
    best: tuple[int, str] | None = None
    for line in route_text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 7:
            continue
        try:
            destination, flags, metric = int(fields[1], 16), int(fields[3], 16), int(fields[6])
        except ValueError:
            continue
        if destination == 0 and flags & 0x1 and (best is None or metric < best[0]):
            best = (metric, fields[0])
    return best[1] if best else None


@dataclass(frozen=True)
class PidStat:
    """The parts of ``/proc/<pid>/stat`` the Summary uses (times in clock ticks, rss in pages)."""

    minor_faults: int
    major_faults: int
    user_ticks: int
    system_ticks: int
    start_ticks: int  # after boot
    rss_pages: int


def parse_pid_stat(text: str) -> PidStat | None:
    """``/proc/<pid>/stat``; the command name may hold spaces and parentheses, so fields count from its end."""
    _, paren, rest = text.rpartition(")")
    fields = rest.split()
    if not paren or len(fields) < 22:
        return None
    try:
        # fields after the name start at the state (field 3 of proc(5))
        return PidStat(
            minor_faults=int(fields[7]),
            major_faults=int(fields[9]),
            user_ticks=int(fields[11]),
            system_ticks=int(fields[12]),
            start_ticks=int(fields[19]),
            rss_pages=int(fields[21]),
        )
    except ValueError:
        return None


@dataclass(frozen=True)
class FsStats:
    capacity_bytes: int
    available_bytes: int
    used_bytes: int
    inodes: int
    inodes_free: int


def fs_stats(path: Path) -> FsStats | None:
    """``statvfs`` of the file system holding ``path``; None when it cannot be read. Blocking."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return FsStats(
        capacity_bytes=st.f_blocks * st.f_frsize,
        available_bytes=st.f_bavail * st.f_frsize,
        used_bytes=(st.f_blocks - st.f_bfree) * st.f_frsize,
        inodes=st.f_files,
        inodes_free=st.f_ffree,
    )


def rfc3339(seconds: float) -> str:
    """Kubernetes' ``metav1.Time`` form: UTC, whole seconds, ``Z``."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- samples ----------------------------------------------------------------------------------------------


@dataclass
class HostSample:
    """What ``/proc`` and ``statvfs`` said about the node and this process at ``time``."""

    time: float
    cpu_ns: int | None = None
    boot_time: int | None = None
    meminfo: dict[str, int] = field(default_factory=dict)
    vmstat: dict[str, int] = field(default_factory=dict)
    interfaces: dict[str, Interface] = field(default_factory=dict)
    default_interface: str | None = None
    own: PidStat | None = None
    fs: FsStats | None = None
    image_fs: FsStats | None = None
    image_bytes: int | None = None

    @property
    def own_cpu_ns(self) -> int | None:
        if self.own is None:
            return None
        return (self.own.user_ticks + self.own.system_ticks) * 1_000_000_000 // _ticks()

    @property
    def own_start(self) -> float | None:
        if self.own is None or self.boot_time is None:
            return None
        return self.boot_time + self.own.start_ticks / _ticks()


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def read_host(
    data_dir: Path | None, *, proc: Path = Path("/proc"), memory: bool = True, network_and_fs: bool = True
) -> HostSample:
    """Read the node's numbers (blocking: run it in a worker thread). Missing files leave fields unset.

    CPU counters are always read; memory and network/file systems when asked (a CPU-only second sample
    skips them); the file system is ``data_dir``'s.
    """
    sample = HostSample(time=time.time())
    text = _read(proc / "stat")
    if text is not None:
        sample.cpu_ns, sample.boot_time = parse_proc_stat(text, _ticks())
    text = _read(proc / "self" / "stat")
    if text is not None:
        sample.own = parse_pid_stat(text)
    if memory:
        sample.meminfo = parse_meminfo(_read(proc / "meminfo") or "")
        sample.vmstat = parse_meminfo(_read(proc / "vmstat") or "")
    if not network_and_fs:
        return sample
    sample.interfaces = parse_net_dev(_read(proc / "net" / "dev") or "")
    sample.default_interface = default_interface(_read(proc / "net" / "route") or "")
    if data_dir is not None:
        sample.fs = fs_stats(data_dir)
    return sample


@dataclass
class ContainerSample:
    id: str
    name: str
    start_time: float | None = None
    usage: Any = None  # ContainerUsage, or None when the runtime could not say
    nano_cores: int | None = None


@dataclass
class PodSample:
    namespace: str
    name: str
    uid: str
    containers: list[ContainerSample] = field(default_factory=list)


@dataclass
class Snapshot:
    """One collection: the node, this process and the pods, with the CPU rates worked out."""

    node_name: str
    host: HostSample
    node_nano_cores: int | None = None
    own_nano_cores: int | None = None
    pods: list[PodSample] = field(default_factory=list)
    scrape_error: bool = False


# -- the Summary (kubelet's stats/v1alpha1 JSON) ----------------------------------------------------------


def _node_memory(host: HostSample) -> dict[str, Any]:
    meminfo = host.meminfo
    total, free = meminfo.get("MemTotal"), meminfo.get("MemFree")
    if total is None or free is None:
        return {}
    # as cAdvisor's root cgroup: usage is everything not free; working set leaves out inactive file pages
    usage = max(0, total - free)
    inactive = meminfo.get("Inactive(file)")
    working_set = max(0, usage - inactive) if inactive is not None else usage
    memory: dict[str, Any] = {
        "time": rfc3339(host.time),
        "availableBytes": max(0, total - working_set),
        "usageBytes": usage,
        "workingSetBytes": working_set,
    }
    if "AnonPages" in meminfo:
        memory["rssBytes"] = meminfo["AnonPages"]
    if "pgfault" in host.vmstat:
        memory["pageFaults"] = host.vmstat["pgfault"]
    if "pgmajfault" in host.vmstat:
        memory["majorPageFaults"] = host.vmstat["pgmajfault"]
    return memory


def _cpu(when: float, usage_ns: int | None, nano_cores: int | None) -> dict[str, Any]:
    if usage_ns is None:
        return {}
    cpu: dict[str, Any] = {"time": rfc3339(when)}
    if nano_cores is not None:
        cpu["usageNanoCores"] = nano_cores
    cpu["usageCoreNanoSeconds"] = usage_ns
    return cpu


def _interface(item: Interface) -> dict[str, Any]:
    return {
        "name": item.name,
        "rxBytes": item.rx_bytes,
        "rxErrors": item.rx_errors,
        "txBytes": item.tx_bytes,
        "txErrors": item.tx_errors,
    }


def _node_network(host: HostSample) -> dict[str, Any]:
    # cAdvisor leaves loopback and veth pairs (containers' ends) out of the node's interfaces
    interfaces = [i for name, i in host.interfaces.items() if name != "lo" and not name.startswith("veth")]
    if not interfaces:
        return {}
    chosen = host.interfaces.get(host.default_interface or "") or interfaces[0]
    return {"time": rfc3339(host.time), **_interface(chosen), "interfaces": [_interface(i) for i in interfaces]}


def _fs(when: float, fs: FsStats | None, used_bytes: int | None = None) -> dict[str, Any]:
    if fs is None:
        return {}
    return {
        "time": rfc3339(when),
        "availableBytes": fs.available_bytes,
        "capacityBytes": fs.capacity_bytes,
        "usedBytes": fs.used_bytes if used_bytes is None else used_bytes,
        "inodesFree": fs.inodes_free,
        "inodes": fs.inodes,
        "inodesUsed": max(0, fs.inodes - fs.inodes_free),
    }


def _container_memory(usage: Any) -> dict[str, Any]:
    memory: dict[str, Any] = {
        "time": rfc3339(usage.timestamp),
        "usageBytes": usage.memory_usage_bytes,
        "workingSetBytes": usage.memory_working_set_bytes,
    }
    if usage.memory_rss_bytes is not None:
        memory["rssBytes"] = usage.memory_rss_bytes
    return memory


def _pod_network(pod: PodSample) -> dict[str, Any]:
    # a pod's containers share its network namespace: one container's numbers are the pod's
    for container in pod.containers:
        usage = container.usage
        if usage is not None and usage.rx_bytes is not None and usage.tx_bytes is not None:
            item = Interface(POD_INTERFACE, usage.rx_bytes, usage.rx_errors or 0, usage.tx_bytes, usage.tx_errors or 0)
            return {"time": rfc3339(usage.timestamp), **_interface(item), "interfaces": [_interface(item)]}
    return {}


def _pod(pod: PodSample, only_cpu_and_memory: bool) -> dict[str, Any]:
    containers: list[dict[str, Any]] = []
    for container in pod.containers:
        entry: dict[str, Any] = {"name": container.name}
        if container.start_time is not None:
            entry["startTime"] = rfc3339(container.start_time)
        if container.usage is not None:
            entry["cpu"] = _cpu(container.usage.timestamp, container.usage.cpu_usage_ns, container.nano_cores)
            entry["memory"] = _container_memory(container.usage)
        containers.append(entry)
    out: dict[str, Any] = {"podRef": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid}}
    starts = [c.start_time for c in pod.containers if c.start_time is not None]
    if starts:
        out["startTime"] = rfc3339(min(starts))
    out["containers"] = containers
    measured = [c for c in pod.containers if c.usage is not None]
    if measured:
        when = max(c.usage.timestamp for c in measured)
        rates = [c.nano_cores for c in measured]
        out["cpu"] = _cpu(
            when,
            sum(c.usage.cpu_usage_ns for c in measured),
            sum(r for r in rates if r is not None) if all(r is not None for r in rates) else None,
        )
        memory: dict[str, Any] = {
            "time": rfc3339(when),
            "usageBytes": sum(c.usage.memory_usage_bytes for c in measured),
            "workingSetBytes": sum(c.usage.memory_working_set_bytes for c in measured),
        }
        rss = [c.usage.memory_rss_bytes for c in measured]
        if all(r is not None for r in rss):
            memory["rssBytes"] = sum(r for r in rss if r is not None)
        out["memory"] = memory
    if not only_cpu_and_memory and (network := _pod_network(pod)):
        out["network"] = network
    return out


def summary(snapshot: Snapshot, *, only_cpu_and_memory: bool = False) -> dict[str, Any]:
    """kubelet's ``/stats/summary`` body for ``snapshot``; ``only_cpu_and_memory`` drops network and fs."""
    host = snapshot.host
    own: dict[str, Any] = {"name": "kubelet"}
    if host.own_start is not None:
        own["startTime"] = rfc3339(host.own_start)
    if cpu := _cpu(host.time, host.own_cpu_ns, snapshot.own_nano_cores):
        own["cpu"] = cpu
    if host.own is not None:
        rss = host.own.rss_pages * _page_size()
        own["memory"] = {
            "time": rfc3339(host.time),
            "usageBytes": rss,
            "workingSetBytes": rss,
            "rssBytes": rss,
            "pageFaults": host.own.minor_faults,
            "majorPageFaults": host.own.major_faults,
        }
    node: dict[str, Any] = {"nodeName": snapshot.node_name, "systemContainers": [own]}
    if host.boot_time is not None:
        node["startTime"] = rfc3339(host.boot_time)
    if cpu := _cpu(host.time, host.cpu_ns, snapshot.node_nano_cores):
        node["cpu"] = cpu
    if memory := _node_memory(host):
        node["memory"] = memory
    if not only_cpu_and_memory:
        if network := _node_network(host):
            node["network"] = network
        if fs := _fs(host.time, host.fs):
            node["fs"] = fs
        if image_fs := _fs(host.time, host.image_fs, host.image_bytes):
            node["runtime"] = {"imageFs": image_fs}
    return {"node": node, "pods": [_pod(pod, only_cpu_and_memory) for pod in snapshot.pods]}


# -- /metrics/resource (Prometheus text, kubelet's names) -------------------------------------------------

_CPU_HELP = "[STABLE] Cumulative cpu time consumed by the {} in core-seconds"
_MEMORY_HELP = "[STABLE] Current working set of the {} in bytes"
_METRICS = (
    ("container_cpu_usage_seconds_total", "counter", _CPU_HELP.format("container")),
    ("container_memory_working_set_bytes", "gauge", _MEMORY_HELP.format("container")),
    ("container_start_time_seconds", "gauge", "[STABLE] Start time of the container since unix epoch in seconds"),
    ("node_cpu_usage_seconds_total", "counter", _CPU_HELP.format("node")),
    ("node_memory_working_set_bytes", "gauge", _MEMORY_HELP.format("node")),
    ("pod_cpu_usage_seconds_total", "counter", _CPU_HELP.format("pod")),
    ("pod_memory_working_set_bytes", "gauge", _MEMORY_HELP.format("pod")),
    ("scrape_error", "gauge", "[ALPHA] 1 if there was an error while getting container metrics, 0 otherwise"),
)


def _go_float(value: float) -> str:
    """A sample value as Go's client writes it (``0``, ``6772.3``, ``9.68769536e+08``)."""
    from prometheus_client.utils import floatToGoString

    text = floatToGoString(value)
    return text[:-2] if text.endswith(".0") else text


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def resource_metrics(snapshot: Snapshot) -> str:
    """kubelet's ``/metrics/resource`` text for ``snapshot`` (each sample stamped with its time in ms)."""
    samples: dict[str, list[tuple[dict[str, str], float, float | None]]] = {name: [] for name, _, _ in _METRICS}
    host = snapshot.host
    if host.cpu_ns is not None:
        samples["node_cpu_usage_seconds_total"].append(({}, host.cpu_ns / 1e9, host.time))
    if memory := _node_memory(host):
        samples["node_memory_working_set_bytes"].append(({}, memory["workingSetBytes"], host.time))
    for pod in snapshot.pods:
        pod_labels = {"namespace": pod.namespace, "pod": pod.name}
        measured = [c for c in pod.containers if c.usage is not None]
        for container in pod.containers:
            labels = {"container": container.name, **pod_labels}
            if container.usage is not None:
                usage = container.usage
                samples["container_cpu_usage_seconds_total"].append((labels, usage.cpu_usage_ns / 1e9, usage.timestamp))
                samples["container_memory_working_set_bytes"].append(
                    (labels, usage.memory_working_set_bytes, usage.timestamp)
                )
            if container.start_time is not None:  # kubelet stamps this one with the start itself
                start = container.start_time
                samples["container_start_time_seconds"].append((labels, start, start))
        if measured:
            when = max(c.usage.timestamp for c in measured)
            cpu = sum(c.usage.cpu_usage_ns for c in measured) / 1e9
            working_set = sum(c.usage.memory_working_set_bytes for c in measured)
            samples["pod_cpu_usage_seconds_total"].append((pod_labels, cpu, when))
            samples["pod_memory_working_set_bytes"].append((pod_labels, working_set, when))
    samples["scrape_error"].append(({}, 1.0 if snapshot.scrape_error else 0.0, None))

    lines: list[str] = []
    for name, kind, help_text in _METRICS:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value, when in samples[name]:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            series = f"{name}{{{label_text}}}" if labels else name
            stamp = f" {int(when * 1000)}" if when is not None else ""
            lines.append(f"{series} {_go_float(value)}{stamp}")
    return "\n".join(lines) + "\n"


# -- the collector ----------------------------------------------------------------------------------------


def _rate(previous: tuple[float, int] | None, current: tuple[float, int]) -> int | None:
    if previous is None:
        return None
    seconds, used = current[0] - previous[0], current[1] - previous[1]
    if not RATE_MIN_SECONDS <= seconds <= RATE_MAX_SECONDS or used < 0:
        return None
    return int(used / seconds)


@dataclass
class _Round:
    host: HostSample
    usage: dict[str, Any] = field(default_factory=dict)  # container id -> ContainerUsage
    errors: int = 0

    def counters(self) -> dict[str, tuple[float, int]]:
        out = {f"container/{cid}": (u.timestamp, u.cpu_usage_ns) for cid, u in self.usage.items()}
        if self.host.cpu_ns is not None:
            out["node"] = (self.host.time, self.host.cpu_ns)
        if (own := self.host.own_cpu_ns) is not None:
            out["kubelet"] = (self.host.time, own)
        return out


class StatsCollector:
    """Answers the stats paths for one node; lives as long as edgestream, keeping the last CPU counters."""

    def __init__(self, runtime: Any, node: str, data_dir: Path | None) -> None:
        self.runtime = runtime
        self.node = node
        self.data_dir = data_dir
        # earlier counters, spaced at least RATE_MIN_SECONDS apart, newest last: a request right after another
        # measures its rates against an older one instead of waiting for a fresh interval
        self._history: list[dict[str, tuple[float, int]]] = []
        self._last_rates: dict[str, int] = {}
        self._last_rates_at = 0.0
        self._started: dict[str, float | None] = {}  # container id -> start time (it never changes)
        self._image_fs_path: Path | None = None  # asked once: podman's /info is slow and the path never changes

    async def serve(self, request: MetricsRequest) -> tuple[str, bytes]:
        """(content type, body) for ``request``; raises :class:`StatsError` with the HTTP status."""
        if request.path not in MetricsRequest.PATHS:
            raise StatsError(
                f"{request.path!r} is not served by node {self.node} (supported: {', '.join(MetricsRequest.PATHS)})",
                code=404,
            )
        if request.path == SUMMARY_PATH:
            query = parse_qs(request.query)
            only = (query.get("only_cpu_and_memory") or [""])[-1].lower() in ("true", "1")
            snapshot = await self.collect(only_cpu_and_memory=only)
            body = json.dumps(summary(snapshot, only_cpu_and_memory=only), indent=2).encode()
            return SUMMARY_CONTENT_TYPE, body
        snapshot = await self.collect(only_cpu_and_memory=True)
        return RESOURCE_CONTENT_TYPE, resource_metrics(snapshot).encode()

    async def _containers(self) -> list[Any]:
        from .containers import ContainerNotFound

        try:
            found = await self.runtime.list_containers({LABEL_NODE: self.node})
        except ContainerNotFound as exc:
            raise StatsError(str(exc), code=exc.code) from None
        except Exception as exc:
            raise StatsError(f"the node's container runtime is not reachable: {exc}", code=503) from None
        return [c for c in found if c.state == "running" and c.labels.get(LABEL_CONTAINER) and c.labels.get(LABEL_POD)]

    async def _sample(self, containers: list[Any], *, memory: bool, full: bool) -> _Round:
        host = await trio.to_thread.run_sync(lambda: read_host(self.data_dir, memory=memory, network_and_fs=full))
        sampled = _Round(host)

        async def one(container: Any) -> None:
            try:
                usage = await self.runtime.container_stats(container.id)
            except Exception as exc:
                log.debug("edgestream: node %s: stats of %s: %r", self.node, container.id[:12], exc)
                sampled.errors += 1
                return
            if usage is not None:
                sampled.usage[container.id] = usage
            if container.id not in self._started:
                self._started[container.id] = await self._start_time(container.id)

        async with trio.open_nursery() as nursery:
            for container in containers:
                nursery.start_soon(one, container)
            if full:
                nursery.start_soon(self._image_fs, host)
        return sampled

    async def _start_time(self, container_id: str) -> float | None:
        from kubeedge.plugins.edged.runtime import epoch_seconds

        try:
            status = await self.runtime.inspect_container(container_id)
        except Exception as exc:
            log.debug("edgestream: node %s: inspect %s: %r", self.node, container_id[:12], exc)
            return None
        return epoch_seconds(status.started_at) if status is not None else None

    async def _image_fs(self, host: HostSample) -> None:
        try:
            if self._image_fs_path is None:
                self._image_fs_path = Path(await self.runtime.image_fs())
            images = await self.runtime.list_images()
        except Exception as exc:
            log.debug("edgestream: node %s: image fs: %r", self.node, exc)
            return
        host.image_fs = await trio.to_thread.run_sync(fs_stats, self._image_fs_path)
        host.image_bytes = sum(int(image.size) for image in images)

    def _rates(self, counters: dict[str, tuple[float, int]]) -> dict[str, int | None]:
        """Each counter's rate against the newest earlier sample far enough back; failing that, the rate the
        last request measured (requests closer together than RATE_MIN_SECONDS share one interval)."""
        rates: dict[str, int | None] = {}
        for key, value in counters.items():
            rate = next((r for past in reversed(self._history) if (r := _rate(past.get(key), value)) is not None), None)
            if rate is None and value[0] - self._last_rates_at <= LAST_RATES_MAX_AGE:
                rate = self._last_rates.get(key)
            rates[key] = rate
        return rates

    def _remember(self, counters: dict[str, tuple[float, int]], rates: dict[str, int | None]) -> None:
        self._last_rates = {key: rate for key, rate in rates.items() if rate is not None}
        newest = max((t for t, _ in counters.values()), default=0.0)
        self._last_rates_at = newest
        if self._history:
            last = max((t for t, _ in self._history[-1].values()), default=0.0)
            if newest - last < RATE_MIN_SECONDS:
                return  # too close to the last one kept: it stays the base for the next request
        self._history = [*self._history[-2:], counters]

    async def collect(self, *, only_cpu_and_memory: bool = False) -> Snapshot:
        containers = await self._containers()
        latest = await self._sample(containers, memory=True, full=not only_cpu_and_memory)
        counters = latest.counters()
        rates = self._rates(counters)
        if any(rate is None for rate in rates.values()):
            # nothing earlier to measure some counter against: measure a short interval now
            base = counters
            await trio.sleep(RESAMPLE_SECONDS)
            second = await self._sample(containers, memory=False, full=False)
            second.host.meminfo, second.host.vmstat = latest.host.meminfo, latest.host.vmstat
            second.host.interfaces, second.host.default_interface = (
                latest.host.interfaces,
                latest.host.default_interface,
            )
            second.host.fs, second.host.image_fs, second.host.image_bytes = (
                latest.host.fs,
                latest.host.image_fs,
                latest.host.image_bytes,
            )
            second.errors += latest.errors
            latest = second
            counters = latest.counters()
            rates = {key: _rate(base.get(key), value) for key, value in counters.items()}
        self._remember(counters, rates)
        live = {c.id for c in containers}
        self._started = {cid: start for cid, start in self._started.items() if cid in live}

        snapshot = Snapshot(
            node_name=self.node,
            host=latest.host,
            node_nano_cores=rates.get("node"),
            own_nano_cores=rates.get("kubelet"),
            scrape_error=latest.errors > 0,
        )
        pods: dict[tuple[str, str, str], PodSample] = {}
        for container in containers:
            labels = container.labels
            key = (labels.get(LABEL_NAMESPACE, ""), labels[LABEL_POD], labels.get(LABEL_UID, ""))
            pod = pods.setdefault(key, PodSample(*key))
            pod.containers.append(
                ContainerSample(
                    id=container.id,
                    name=labels[LABEL_CONTAINER],
                    start_time=self._started.get(container.id),
                    usage=latest.usage.get(container.id),
                    nano_cores=rates.get(f"container/{container.id}"),
                )
            )
        snapshot.pods = sorted(pods.values(), key=lambda p: (p.namespace, p.name))
        for pod in snapshot.pods:
            pod.containers.sort(key=lambda c: c.name)
        return snapshot

"""The Node object edged registers and the NodeStatus it reports, built from the machine it runs on."""

from __future__ import annotations

import os
import platform
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["KUBELET_VERSION", "detect_node_ip", "machine_resources", "node_object", "node_status", "rfc3339"]

# KubeEdge reports `<kubernetes version>-kubeedge-<kubeedge version>` as the kubelet version.
KUBELET_VERSION = "v1.30.7-kubeedge-v1.20.0"
ARCHITECTURES = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def rfc3339(when: float | None = None) -> str:
    moment = datetime.fromtimestamp(when, UTC) if when is not None else datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def detect_node_ip() -> str:
    """The address of the interface the default route uses (a UDP connect sends nothing); else loopback."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere, only used to pick a source
        return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def machine_resources(storage_path: Path | None = None, max_pods: int = 110) -> dict[str, str]:
    """capacity: cpu, memory (Ki), pods, ephemeral-storage (Ki) of this machine."""
    memory_kib = 0
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
            break
    if not memory_kib:
        memory_kib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024
    resources = {"cpu": str(os.cpu_count() or 1), "memory": f"{memory_kib}Ki", "pods": str(max_pods)}
    if storage_path is not None:
        try:
            statvfs = os.statvfs(storage_path)
            resources["ephemeral-storage"] = f"{statvfs.f_blocks * statvfs.f_frsize // 1024}Ki"
        except OSError:
            pass
    return resources


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.partition("=")[2].strip('"')
    return platform.system()


def node_info(runtime_version: str) -> dict[str, str]:
    return {
        "machineID": _read("/etc/machine-id"),
        "systemUUID": _read("/sys/class/dmi/id/product_uuid"),
        "bootID": _read("/proc/sys/kernel/random/boot_id"),
        "kernelVersion": platform.release(),
        "osImage": _os_image(),
        "containerRuntimeVersion": runtime_version,
        "kubeletVersion": KUBELET_VERSION,
        "kubeProxyVersion": "",
        "operatingSystem": platform.system().lower(),
        "architecture": ARCHITECTURES.get(platform.machine().lower(), platform.machine().lower()),
    }


def node_status(
    *,
    node_ip: str,
    runtime_version: str,
    resources: dict[str, str],
    ready_since: str,
    images: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    now = rfc3339()
    return {
        "capacity": dict(resources),
        "allocatable": dict(resources),
        "phase": "Running",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "EdgeReady",
                "message": "edge is posting ready status",
                "lastHeartbeatTime": now,
                "lastTransitionTime": ready_since,
            },
            *[
                {
                    "type": kind,
                    "status": "False",
                    "reason": reason,
                    "message": message,
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": ready_since,
                }
                for kind, reason, message in (
                    ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                    ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                    ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                )
            ],
        ],
        "addresses": [
            {"type": "InternalIP", "address": node_ip},
            {"type": "Hostname", "address": socket.gethostname()},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10350}},
        "nodeInfo": node_info(runtime_version),
        "images": images or [],
    }


def node_object(
    name: str,
    *,
    labels: dict[str, str],
    status: dict[str, Any],
) -> dict[str, Any]:
    info = status.get("nodeInfo") or {}
    all_labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": info.get("operatingSystem", "linux"),
        "kubernetes.io/arch": info.get("architecture", ""),
        "beta.kubernetes.io/os": info.get("operatingSystem", "linux"),
        "beta.kubernetes.io/arch": info.get("architecture", ""),
        "node-role.kubernetes.io/edge": "",
        "node-role.kubernetes.io/agent": "",
        **labels,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": all_labels},
        "spec": {},
        "status": status,
    }

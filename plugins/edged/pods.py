"""Pure translations between Kubernetes pod specs and runtime containers, and kubelet's status rules.

No I/O here except :func:`materialise_volumes` (files under the pod's directory, run off the trio thread by
the caller). Everything else is a function of its arguments and is tested as such.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .runtime import (
    LABEL_CONTAINER,
    LABEL_HASH,
    LABEL_MANAGED,
    LABEL_NAMESPACE,
    LABEL_NODE,
    LABEL_POD,
    LABEL_RESTART_COUNT,
    LABEL_UID,
    ContainerConfig,
    Mount,
    PortMapping,
)

__all__ = [
    "ConfigError",
    "Objects",
    "container_config",
    "container_hash",
    "container_name",
    "expand",
    "grace_period",
    "materialise_volumes",
    "pod_phase",
    "references",
    "resolve_env",
]

DEFAULT_GRACE = 30.0
SUPPORTED_VOLUMES = ("configMap", "secret", "hostPath", "emptyDir")


class ConfigError(Exception):
    """The pod cannot be turned into containers yet (kubelet's CreateContainerConfigError)."""


@dataclass
class Objects:
    """The configmaps and secrets a pod refers to, as fetched from metamanager (absent ones missing)."""

    configmaps: dict[str, dict[str, Any]] = field(default_factory=dict)
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def values(self, kind: str, name: str) -> dict[str, str] | None:
        """The object's keys as text (secrets decoded), or None when the object is not known."""
        if kind == "configmap":
            obj = self.configmaps.get(name)
            if obj is None:
                return None
            values = {k: str(v) for k, v in (obj.get("data") or {}).items()}
            for key, encoded in (obj.get("binaryData") or {}).items():
                values[key] = _b64(encoded).decode(errors="replace")
            return values
        obj = self.secrets.get(name)
        if obj is None:
            return None
        values = {k: _b64(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()}
        values.update({k: str(v) for k, v in (obj.get("stringData") or {}).items()})
        return values

    def files(self, kind: str, name: str) -> dict[str, bytes] | None:
        """The object's keys as file contents (bytes), or None when the object is not known."""
        if kind == "configmap":
            obj = self.configmaps.get(name)
            if obj is None:
                return None
            files = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
            files.update({k: _b64(v) for k, v in (obj.get("binaryData") or {}).items()})
            return files
        obj = self.secrets.get(name)
        if obj is None:
            return None
        files = {k: _b64(v) for k, v in (obj.get("data") or {}).items()}
        files.update({k: str(v).encode() for k, v in (obj.get("stringData") or {}).items()})
        return files


def _b64(value: Any) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"value is not valid base64: {str(value)[:20]!r}") from None


# -- identity -----------------------------------------------------------------------------------------


def pod_key(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name', '')}"


def grace_period(pod: Mapping[str, Any], override: float | None = None) -> float:
    """Seconds between SIGTERM and SIGKILL: the delete's grace, else the pod's deletion grace, else its spec."""
    if override is not None:
        return max(0.0, float(override))
    meta = pod.get("metadata") or {}
    if meta.get("deletionGracePeriodSeconds") is not None:
        return max(0.0, float(meta["deletionGracePeriodSeconds"]))
    spec = pod.get("spec") or {}
    if spec.get("terminationGracePeriodSeconds") is not None:
        return max(0.0, float(spec["terminationGracePeriodSeconds"]))
    return DEFAULT_GRACE


def container_hash(container: Mapping[str, Any]) -> str:
    """A stable hash of a container's spec: a running container whose label differs is replaced."""
    return hashlib.sha256(json.dumps(container, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def container_name(pod: Mapping[str, Any], container: str, restart_count: int) -> str:
    """kubelet's docker-era naming: ``k8s_<container>_<pod>_<namespace>_<uid>_<attempt>``."""
    meta = pod.get("metadata") or {}
    uid = str(meta.get("uid", ""))[:8]
    return f"k8s_{container}_{meta.get('name', '')}_{meta.get('namespace') or 'default'}_{uid}_{restart_count}"


# -- references and environment ---------------------------------------------------------------------


def references(pod: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """Names of the configmaps and secrets the pod uses (env, envFrom, volumes)."""
    configmaps: set[str] = set()
    secrets: set[str] = set()
    spec = pod.get("spec") or {}
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for source in container.get("envFrom") or []:
            if source.get("configMapRef"):
                configmaps.add(source["configMapRef"].get("name", ""))
            if source.get("secretRef"):
                secrets.add(source["secretRef"].get("name", ""))
        for var in container.get("env") or []:
            value_from = var.get("valueFrom") or {}
            if value_from.get("configMapKeyRef"):
                configmaps.add(value_from["configMapKeyRef"].get("name", ""))
            if value_from.get("secretKeyRef"):
                secrets.add(value_from["secretKeyRef"].get("name", ""))
    for volume in spec.get("volumes") or []:
        if volume.get("configMap"):
            configmaps.add(volume["configMap"].get("name", ""))
        if volume.get("secret"):
            secrets.add(volume["secret"].get("secretName", ""))
    configmaps.discard("")
    secrets.discard("")
    return configmaps, secrets


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known names are replaced, unknown ones kept, ``$$`` is ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _REFERENCE.sub(replace, text)


def _field_ref(pod: Mapping[str, Any], path: str, *, node_name: str, host_ip: str, pod_ip: str) -> str:
    meta = pod.get("metadata") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace") or "default",
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": (pod.get("spec") or {}).get("nodeName") or node_name,
        "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName", ""),
        "status.hostIP": host_ip,
        "status.podIP": pod_ip,
        "status.hostIPs": host_ip,
        "status.podIPs": pod_ip,
    }
    if path in simple:
        return str(simple[path])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ConfigError(f"unsupported fieldRef fieldPath {path!r}")


def resolve_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    objects: Objects,
    *,
    node_name: str,
    host_ip: str = "",
    pod_ip: str = "",
) -> dict[str, str]:
    """The container's environment, as kubelet builds it: envFrom first, then env in order with ``$(VAR)``."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        for kind, key in (("configmap", "configMapRef"), ("secret", "secretRef")):
            ref = source.get(key)
            if not ref:
                continue
            values = objects.values(kind, ref.get("name", ""))
            if values is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind} "{ref.get("name", "")}" not found')
            for name, value in values.items():
                env[prefix + name] = value
    for var in container.get("env") or []:
        name = var.get("name", "")
        if "value" in var and var.get("value") is not None:
            env[name] = expand(str(var["value"]), env)
            continue
        value_from = var.get("valueFrom") or {}
        if not value_from:
            env[name] = ""
            continue
        for kind, key in (("configmap", "configMapKeyRef"), ("secret", "secretKeyRef")):
            ref = value_from.get(key)
            if not ref:
                continue
            values = objects.values(kind, ref.get("name", ""))
            if values is None or ref.get("key") not in values:
                if ref.get("optional"):
                    break
                what = f'{kind} "{ref.get("name", "")}"'
                raise ConfigError(
                    f"{what} not found" if values is None else f"couldn't find key {ref.get('key')} in {what}"
                )
            env[name] = values[ref["key"]]
            break
        else:
            if value_from.get("fieldRef"):
                path = value_from["fieldRef"].get("fieldPath", "")
                env[name] = _field_ref(pod, path, node_name=node_name, host_ip=host_ip, pod_ip=pod_ip)
            elif value_from.get("resourceFieldRef"):
                env[name] = _resource_field(container, value_from["resourceFieldRef"])
    return env


def _resource_field(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    """kubelet's resourceFieldRef: the limit (or request), else the node's capacity, over the divisor."""
    kind, _, resource = str(ref.get("resource", "")).partition(".")
    divisor = parse_quantity(ref.get("divisor") or "1") or 1.0
    value = ((container.get("resources") or {}).get(kind) or {}).get(resource)
    if value is not None:
        amount = parse_quantity(value)
    elif resource == "cpu":
        amount = float(os.cpu_count() or 1)
    elif resource == "memory":
        amount = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    else:
        amount = 0.0
    return str(math.ceil(amount / divisor))


# -- volumes ------------------------------------------------------------------------------------------


def volume_dir(pods_dir: Path, uid: str, kind: str, name: str) -> Path:
    return pods_dir / uid / "volumes" / kind / name


def materialise_volumes(pod: Mapping[str, Any], pods_dir: Path, objects: Objects) -> dict[str, str]:
    """Create the pod's volumes on disk; return volume name -> host path. Raises :class:`ConfigError`.

    configMap/secret volumes are (re)written in place, so a changed configmap shows up in running
    containers, as kubelet's volumes do. Blocking file I/O: call it with ``trio.to_thread.run_sync``.
    """
    uid = str((pod.get("metadata") or {}).get("uid", ""))
    paths: dict[str, str] = {}
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        name = volume.get("name", "")
        if volume.get("hostPath") is not None:
            paths[name] = _host_path(volume["hostPath"], name)
        elif volume.get("emptyDir") is not None:
            target = volume_dir(pods_dir, uid, "empty-dir", name)
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o777)
            paths[name] = str(target)
        elif volume.get("configMap") is not None or volume.get("secret") is not None:
            source = volume.get("configMap") or volume.get("secret") or {}
            kind = "configmap" if volume.get("configMap") is not None else "secret"
            object_name = source.get("name") if kind == "configmap" else source.get("secretName")
            files = objects.files(kind, str(object_name or ""))
            if files is None:
                if not source.get("optional"):
                    raise ConfigError(f'{kind} "{object_name}" not found (volume {name!r})')
                files = {}
            default_mode = int(source.get("defaultMode", 0o644))
            target = volume_dir(pods_dir, uid, kind, name)
            _write_files(target, files, source.get("items"), default_mode, name)
            paths[name] = str(target)
        else:
            kinds = [k for k in volume if k != "name"]
            raise ConfigError(f"volume {name!r}: unsupported type {kinds} (supported: {', '.join(SUPPORTED_VOLUMES)})")
    return paths


def _host_path(source: Mapping[str, Any], name: str) -> str:
    path = Path(str(source.get("path", "")))
    if not path.is_absolute():
        raise ConfigError(f"volume {name!r}: hostPath {str(path)!r} is not absolute")
    kind = source.get("type") or ""
    if kind == "DirectoryOrCreate":
        path.mkdir(parents=True, exist_ok=True)
    elif kind == "FileOrCreate":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    elif kind == "Directory" and not path.is_dir():
        raise ConfigError(f"volume {name!r}: hostPath {str(path)!r} is not a directory")
    elif kind == "File" and not path.is_file():
        raise ConfigError(f"volume {name!r}: hostPath {str(path)!r} is not a file")
    elif kind == "Socket" and not path.is_socket():
        raise ConfigError(f"volume {name!r}: hostPath {str(path)!r} is not a socket")
    elif not kind and not path.exists():
        # Kubernetes leaves an unset type unchecked; podman refuses a missing bind source, so create it.
        path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _write_files(target: Path, files: dict[str, bytes], items: Any, default_mode: int, volume: str) -> None:
    wanted: dict[str, tuple[bytes, int]] = {}
    if items:
        for item in items:
            key, rel = item.get("key", ""), item.get("path", "")
            if key not in files:
                raise ConfigError(f"volume {volume!r}: key {key!r} not found")
            wanted[rel] = (files[key], int(item.get("mode", default_mode)))
    else:
        wanted = {key: (data, default_mode) for key, data in files.items()}
    target.mkdir(parents=True, exist_ok=True)
    for rel, (data, mode) in wanted.items():
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise ConfigError(f"volume {volume!r}: path {rel!r} must be relative, without '..'")
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_bytes(data)
        temporary.chmod(mode)
        temporary.replace(path)
    for existing in list(target.rglob("*")):
        rel = str(existing.relative_to(target))
        if existing.is_file() and rel not in wanted:
            existing.unlink()
        elif existing.is_dir() and not any(w == rel or w.startswith(rel + "/") for w in wanted):
            shutil.rmtree(existing, ignore_errors=True)


def mounts(container: Mapping[str, Any], volumes: Mapping[str, str]) -> list[Mount]:
    found: list[Mount] = []
    for mount in container.get("volumeMounts") or []:
        name = mount.get("name", "")
        if name not in volumes:
            raise ConfigError(f"container {container.get('name')!r}: volumeMount {name!r} names no volume")
        source = volumes[name]
        if mount.get("subPath"):
            sub = Path(source) / str(mount["subPath"])
            if ".." in Path(str(mount["subPath"])).parts:
                raise ConfigError(f"volumeMount {name!r}: subPath must not contain '..'")
            if not sub.exists():
                sub.mkdir(parents=True, exist_ok=True)
            source = str(sub)
        found.append(Mount(source, str(mount.get("mountPath", "")), bool(mount.get("readOnly", False))))
    return found


# -- resources ----------------------------------------------------------------------------------------

_SUFFIXES = {
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
    "Pi": 1 << 50,
    "Ei": 1 << 60,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


def parse_quantity(value: Any) -> float:
    """A Kubernetes resource quantity (``128Mi``, ``500m``, ``1.5``, ``2e3``) as a number."""
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ConfigError(f"not a resource quantity: {value!r}")
    number = float(match.group(1))
    return number * _SUFFIXES[match.group(2)] if match.group(2) else number


def resources(container: Mapping[str, Any]) -> tuple[int, float, int]:
    """(memory limit in bytes, CPU limit in cores, CPU shares) from the container's resources."""
    spec = container.get("resources") or {}
    limits, requests = spec.get("limits") or {}, spec.get("requests") or {}
    memory = int(parse_quantity(limits["memory"])) if "memory" in limits else 0
    cpu = parse_quantity(limits["cpu"]) if "cpu" in limits else 0.0
    request = requests.get("cpu", limits.get("cpu"))
    shares = max(2, int(parse_quantity(request) * 1024)) if request is not None else 0
    return memory, cpu, shares


# -- container configuration --------------------------------------------------------------------------


def _ports(container: Mapping[str, Any]) -> list[PortMapping]:
    return [
        PortMapping(
            container_port=int(port.get("containerPort", 0)),
            host_port=int(port.get("hostPort") or 0),
            protocol=str(port.get("protocol") or "TCP").lower(),
            host_ip=str(port.get("hostIP") or ""),
        )
        for port in container.get("ports") or []
    ]


def container_config(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    objects: Objects,
    volumes: Mapping[str, str],
    network: str,
    node_name: str,
    host_ip: str,
    restart_count: int,
    extra_env: Mapping[str, str] | None = None,
) -> ContainerConfig:
    """The runtime config of one attempt of one container. Raises :class:`ConfigError`."""
    meta = pod.get("metadata") or {}
    env = resolve_env(pod, container, objects, node_name=node_name, host_ip=host_ip)
    if extra_env:
        env = {**extra_env, **env}
    command = container.get("command")
    args = container.get("args")
    ports = _ports(container)
    pod_ports = [p for c in (pod.get("spec") or {}).get("containers") or [] for p in _ports(c)]
    memory_limit, cpu_limit, cpu_shares = resources(container)
    security = container.get("securityContext") or {}
    pod_security = (pod.get("spec") or {}).get("securityContext") or {}
    user = security.get("runAsUser", pod_security.get("runAsUser"))
    group = security.get("runAsGroup", pod_security.get("runAsGroup"))
    return ContainerConfig(
        name=container_name(pod, str(container.get("name", "")), restart_count),
        image=str(container.get("image", "")),
        command=[expand(str(c), env) for c in command] if command else None,
        args=[expand(str(a), env) for a in args] if args else None,
        env=env,
        working_dir=str(container.get("workingDir") or ""),
        labels={
            LABEL_MANAGED: "true",
            LABEL_NODE: node_name,
            LABEL_NAMESPACE: str(meta.get("namespace") or "default"),
            LABEL_POD: str(meta.get("name", "")),
            LABEL_UID: str(meta.get("uid", "")),
            LABEL_CONTAINER: str(container.get("name", "")),
            LABEL_HASH: container_hash(container),
            LABEL_RESTART_COUNT: str(restart_count),
        },
        mounts=mounts(container, volumes),
        ports=ports,
        pod_ports=pod_ports,
        network=network,
        hostname=str((pod.get("spec") or {}).get("hostname") or meta.get("name", "")),
        user=f"{user}:{group}" if user is not None and group is not None else ("" if user is None else str(user)),
        privileged=bool(security.get("privileged", False)),
        tty=bool(container.get("tty", False)),
        stdin=bool(container.get("stdin", False)),
        memory_limit=memory_limit,
        cpu_limit=cpu_limit,
        cpu_shares=cpu_shares,
    )


# -- status -------------------------------------------------------------------------------------------


def pod_phase(restart_policy: str, statuses: Iterable[Mapping[str, Any]]) -> str:
    """kubelet's getPhase over container statuses (``state`` with one of running/waiting/terminated)."""
    running = waiting = stopped = succeeded = 0
    total = 0
    for status in statuses:
        total += 1
        state = status.get("state") or {}
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            if int(state["terminated"].get("exitCode", 1)) == 0:
                succeeded += 1
        elif "waiting" in state:
            if (status.get("lastState") or {}).get("terminated"):
                stopped += 1
            else:
                waiting += 1
    if total == 0 or waiting > 0:
        return "Pending"
    if running > 0:
        return "Running"
    if stopped > 0:
        if restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def should_restart(restart_policy: str, exit_code: int | None) -> bool:
    if restart_policy == "Never":
        return False
    if restart_policy == "OnFailure":
        return exit_code != 0
    return True


def parse_labels(labels: Mapping[str, str]) -> tuple[str, str, str, str] | None:
    """(namespace, pod, uid, container) of a container edged created, or None."""
    if labels.get(LABEL_MANAGED) != "true":
        return None
    try:
        return labels[LABEL_NAMESPACE], labels[LABEL_POD], labels[LABEL_UID], labels[LABEL_CONTAINER]
    except KeyError:
        return None


Lookup = Callable[[str, str], Any]

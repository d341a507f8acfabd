"""The ``podman`` container runtime: podman's Docker-compatible REST API over its unix socket.

edged talks HTTP to ``podman system service`` with httpx (``AsyncHTTPTransport(uds=...)``), which runs on
trio natively. When the profile says ``startService`` (the default) the runtime starts that service itself
with socket activation: it binds the socket first and hands it to podman as fd 3 (``LISTEN_FDS``), so the
API is ready the moment the process exists and nothing polls for it. Containers live in the host's
podman storage unless ``root``/``runroot`` say otherwise, so ``podman ps`` on the node shows the pods'
containers as ``docker ps`` does for KubeEdge users; they survive edged and the service stopping.

Hosts without CAP_SYS_RESOURCE or with hybrid cgroups need a ``containers.conf`` (runc, cgroupfs, capped
ulimits); ``containersConf: auto`` writes one into the data directory and points ``CONTAINERS_CONF`` at it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from .runtime import (
    LABEL_CONTAINER,
    LABEL_MANAGED,
    LABEL_NAMESPACE,
    LABEL_NODE,
    LABEL_POD,
    LABEL_UID,
    ContainerConfig,
    ContainerRuntime,
    ContainerStatus,
    ContainerUsage,
    ImageInfo,
    RuntimeError_,
    epoch_seconds,
)

__all__ = ["CONTAINERS_CONF", "PodmanRuntime", "demultiplex", "docker_stats_usage"]

log = logging.getLogger("kubeedge.edged.podman")

API_VERSION = "v1.41"
LIBPOD = "v4.0.0/libpod"  # podman's own API (pods), served on the same socket
SANDBOX_LABELS = (LABEL_MANAGED, LABEL_NODE, LABEL_NAMESPACE, LABEL_POD, LABEL_UID)

# What podman needs on hosts like the lab's (no CAP_SYS_RESOURCE, hybrid cgroups): see the module docstring.
CONTAINERS_CONF = """\
# written by kubeedge edged (podman runtime, containersConf: auto)
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "socket": {"type": "string", "description": "unix socket of the podman API service"},
        "startService": {"type": "boolean", "description": "start `podman system service` on the socket"},
        "containersConf": {"type": "string", "description": "'auto' (write one), a path, or '' (host default)"},
        "podmanPath": {"type": "string"},
        "root": {"type": "string", "description": "podman --root (storage); default: the host's"},
        "runroot": {"type": "string"},
        "storageDriver": {"type": "string", "description": "podman --storage-driver (overlay, vfs)"},
        "timeout": {"type": "number", "exclusiveMinimum": 0},
        "podSandbox": {
            "type": "boolean",
            "description": "a podman pod (infra container) per Kubernetes pod, so its containers share the network",
        },
    },
}


def demultiplex(data: bytes) -> bytes:
    """Docker's multiplexed log/exec stream (8-byte frame headers: stream, 0, 0, 0, big-endian length)."""
    out = bytearray()
    offset = 0
    while offset + 8 <= len(data):
        stream, length = data[offset], struct.unpack(">I", data[offset + 4 : offset + 8])[0]
        if stream not in (0, 1, 2) or data[offset + 1 : offset + 4] != b"\0\0\0":
            return bytes(data)  # not multiplexed (a TTY container): the raw bytes are the output
        out += data[offset + 8 : offset + 8 + length]
        offset += 8 + length
    return bytes(out)


def libpod_spec(config: ContainerConfig, pod_id: str) -> dict[str, Any]:
    """podman's SpecGenerator for a container joining pod ``pod_id`` (Kubernetes command/args semantics)."""
    spec: dict[str, Any] = {
        "name": config.name,
        "image": config.image,
        "pod": pod_id,
        "env": dict(config.env),
        "labels": dict(config.labels),
        "mounts": [
            {
                "destination": m.container_path,
                "source": m.host_path,
                "type": "bind",
                "options": ["rbind", "ro" if m.read_only else "rw"],
            }
            for m in config.mounts
        ],
        "privileged": config.privileged,
        "terminal": config.tty,
        "stdin": config.stdin,
    }
    if config.command is not None:
        spec["entrypoint"] = config.command
        spec["command"] = config.args or []
    elif config.args is not None:
        spec["command"] = config.args
    if config.working_dir:
        spec["work_dir"] = config.working_dir
    if config.user:
        spec["user"] = config.user
    limits: dict[str, Any] = {}
    if config.memory_limit:
        limits["memory"] = {"limit": config.memory_limit}
    cpu: dict[str, int] = {}
    if config.cpu_limit:
        cpu |= {"quota": int(config.cpu_limit * 100_000), "period": 100_000}
    if config.cpu_shares:
        cpu["shares"] = config.cpu_shares
    if cpu:
        limits["cpu"] = cpu
    if limits:
        spec["resource_limits"] = limits
    return spec


def docker_stats_usage(data: dict[str, Any], now: float | None = None) -> ContainerUsage | None:
    """A Docker-compatible ``/containers/{id}/stats`` reply as a :class:`ContainerUsage` (None without CPU
    numbers). Working set is usage minus inactive file pages (cgroup v1 ``total_inactive_file``, v2
    ``inactive_file``), as kubelet computes it."""
    cpu = ((data.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    if not isinstance(cpu, int | float):
        return None
    memory = data.get("memory_stats") or {}
    details = memory.get("stats") or {}
    usage = int(memory.get("usage") or 0)
    inactive = details.get("total_inactive_file", details.get("inactive_file"))
    working_set = max(0, usage - int(inactive)) if isinstance(inactive, int | float) else usage
    rss = details.get("total_rss", details.get("rss", details.get("anon")))
    networks = data.get("networks")
    traffic: dict[str, int | None] = dict.fromkeys(("rx_bytes", "tx_bytes", "rx_errors", "tx_errors"))
    if isinstance(networks, dict) and networks:
        for key in traffic:
            values = [n[key] for n in networks.values() if isinstance(n, dict) and isinstance(n.get(key), int)]
            traffic[key] = sum(values) if values else None
    timestamp = epoch_seconds(str(data.get("read") or ""))
    return ContainerUsage(
        timestamp=timestamp if timestamp is not None else (now if now is not None else time.time()),
        cpu_usage_ns=int(cpu),
        memory_usage_bytes=usage,
        memory_working_set_bytes=working_set,
        memory_rss_bytes=int(rss) if isinstance(rss, int | float) else None,
        **traffic,
    )


def _state(raw: str) -> Any:
    raw = (raw or "").lower()
    if raw in ("running", "paused"):
        return "running"
    if raw in ("created", "configured", "initialized"):
        return "created"
    if raw in ("exited", "stopped", "dead", "removing"):
        return "exited"
    return "unknown"


def _time(value: str) -> str:
    # podman reports never-set times as Go's zero time
    return "" if not value or value.startswith("0001-01-01") else value


class PodmanRuntime(ContainerRuntime):
    name = "podman"
    id_scheme = "podman"

    def __init__(self, config: dict[str, Any], *, data_dir: Path, node_name: str) -> None:
        super().__init__(config, data_dir=data_dir, node_name=node_name)
        self.home = data_dir / "podman"
        self.start_service = bool(config.get("startService", True))
        default_socket = self.home / "podman.sock" if self.start_service else Path("/run/podman/podman.sock")
        self.socket_path = Path(config.get("socket") or default_socket)
        self.podman = config.get("podmanPath") or "podman"
        self.timeout = float(config.get("timeout", 60.0))
        self._client: httpx.AsyncClient | None = None
        self.pod_sandbox = bool(config.get("podSandbox", True))
        self._sandboxes: dict[str, str] = {}  # pod uid -> podman pod id
        self._infra: dict[str, str] = {}  # pod uid -> infra container id
        self._sandbox_locks: dict[str, trio.Lock] = {}
        self.env = self._environment(config.get("containersConf", "auto"))

    def _environment(self, containers_conf: str) -> dict[str, str]:
        env = dict(os.environ)
        if containers_conf == "auto":
            self.home.mkdir(parents=True, exist_ok=True)
            path = self.home / "containers.conf"
            if not path.exists() or path.read_text() != CONTAINERS_CONF:
                path.write_text(CONTAINERS_CONF)
            env["CONTAINERS_CONF"] = str(path)
        elif containers_conf:
            if not Path(containers_conf).is_file():
                raise RuntimeError_(f"podman: containersConf {containers_conf!r} is not a file")
            env["CONTAINERS_CONF"] = containers_conf
        return env

    # -- service -------------------------------------------------------------------------------------

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError_("podman: the runtime is not running (call run() first)")
        return self._client

    def podman_command(self) -> list[str]:
        """The podman command line with this runtime's storage flags (for `podman ps` equivalents too)."""
        command = [self.podman]
        if self.config.get("root"):
            command += ["--root", str(self.config["root"])]
        if self.config.get("runroot"):
            command += ["--runroot", str(self.config["runroot"])]
        if self.config.get("storageDriver"):
            command += ["--storage-driver", str(self.config["storageDriver"])]
        return command

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket_path))
        async with httpx.AsyncClient(
            transport=transport, base_url=f"http://podman/{API_VERSION}", timeout=self.timeout
        ) as client:
            self._client = client
            try:
                if self.start_service:
                    await self._serve(task_status)
                else:
                    await self._check()
                    task_status.started()
                    await trio.sleep_forever()
            finally:
                self._client = None

    async def _serve(self, task_status: trio.TaskStatus[Any]) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.socket_path))
            listener.listen(128)
            fd = listener.fileno()
            # Socket activation: a tiny launcher moves our socket to fd 3, names its own pid (podman's, after
            # exec) in LISTEN_PID, and execs podman, which then serves the socket that already accepts.
            launcher = (
                "import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3); os.close(fd) if fd != 3 else None; "
                "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); os.execvp(sys.argv[2], sys.argv[2:])"
            )
            command = [*self.podman_command(), "system", "service", "--time=0"]
            self.home.mkdir(parents=True, exist_ok=True)
            with open(self.home / "service.log", "ab") as service_log:  # noqa: ASYNC230 - opening is instant
                process = await trio.lowlevel.open_process(
                    [sys.executable, "-c", launcher, str(fd), *command],
                    pass_fds=(fd,),
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=service_log,
                    stderr=service_log,
                )
        finally:
            listener.close()
        log.info("podman: API service pid %d on %s", process.pid, self.socket_path)
        try:
            await self._check(process)
            task_status.started()
            code = await process.wait()
            raise RuntimeError_(
                f"podman: `podman system service` exited with status {code} (see {self.home / 'service.log'})"
            )
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.terminate()
                    with trio.move_on_after(5):
                        await process.wait()
                    if process.returncode is None:
                        process.kill()
                        await process.wait()
            self.socket_path.unlink(missing_ok=True)

    async def _check(self, process: trio.Process | None = None) -> None:
        try:
            with trio.fail_after(30):
                reply = await self.client.get("/version")
        except (httpx.HTTPError, trio.TooSlowError) as exc:
            dead = f" (service exited with {process.returncode})" if process and process.returncode is not None else ""
            raise RuntimeError_(f"podman: no API on {self.socket_path}{dead}: {exc!r}") from None
        self._check_reply(reply, "version")
        log.info("podman: API %s, podman %s", API_VERSION, reply.json().get("Version"))

    # -- HTTP helpers --------------------------------------------------------------------------------

    @staticmethod
    def _check_reply(reply: httpx.Response, what: str, *, ok_statuses: tuple[int, ...] = ()) -> httpx.Response:
        if reply.is_success or reply.status_code in ok_statuses:
            return reply
        try:
            body = reply.json()
            text = body.get("message") or body.get("cause") or reply.text
        except ValueError:
            text = reply.text
        raise RuntimeError_(f"podman: {what}: HTTP {reply.status_code}: {text}", not_found=reply.status_code == 404)

    async def version(self) -> str:
        reply = self._check_reply(await self.client.get("/version"), "version")
        return str(reply.json().get("Version", ""))

    # -- images --------------------------------------------------------------------------------------

    async def image_present(self, image: str) -> bool:
        reply = await self.client.get(f"/images/{image}/json")
        if reply.status_code == 404:
            return False
        self._check_reply(reply, f"inspect image {image}")
        return True

    async def pull_image(self, image: str) -> None:
        reply = await self.client.post("/images/create", params={"fromImage": image}, timeout=None)
        self._check_reply(reply, f"pull {image}")
        # The compat endpoint streams progress and reports failure inside the stream.
        for line in reply.text.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("error"):
                raise RuntimeError_(f"podman: pull {image}: {event['error']}")

    async def list_images(self) -> list[ImageInfo]:
        reply = self._check_reply(await self.client.get("/images/json", params={"all": "false"}), "list images")
        images = []
        for item in reply.json():
            image_id = str(item.get("Id", "")).removeprefix("sha256:")
            images.append(
                ImageInfo(
                    id=image_id,
                    tags=list(item.get("RepoTags") or []),
                    size=int(item.get("Size") or 0),
                    created=float(item.get("Created") or 0),
                    containers=int(item.get("Containers") or 0),
                )
            )
        return images

    async def remove_image(self, image_id: str) -> None:
        reply = await self.client.delete(f"/images/{image_id}")
        self._check_reply(reply, f"remove image {image_id}", ok_statuses=(404,))

    async def image_fs(self) -> Path:
        reply = self._check_reply(await self.client.get("/info"), "info")
        return Path(reply.json().get("DockerRootDir") or "/var/lib/containers/storage")

    # -- containers ----------------------------------------------------------------------------------

    # -- pod sandboxes: a podman pod per Kubernetes pod --------------------------------------------------

    async def pod_sandboxes(self, labels: dict[str, str]) -> dict[str, str]:
        filters = json.dumps({"label": [f"{k}={v}" for k, v in labels.items()]})
        reply = await self.client.get(f"http://podman/{LIBPOD}/pods/json", params={"filters": filters})
        found = {}
        for item in self._check_reply(reply, "list pods").json() or []:
            uid = (item.get("Labels") or {}).get(LABEL_UID)
            if uid:
                found[uid] = str(item.get("Id", ""))
                self._sandboxes.setdefault(uid, str(item.get("Id", "")))
                if item.get("InfraId"):
                    self._infra.setdefault(uid, str(item["InfraId"]))
        return found

    async def _sandbox_for(self, config: ContainerConfig) -> str:
        """The infra container of the container's pod, creating and starting the podman pod if needed."""
        labels = config.labels
        uid = labels.get(LABEL_UID, "")
        async with self._sandbox_locks.setdefault(uid, trio.Lock()):
            if uid not in self._infra:
                await self.pod_sandboxes({LABEL_UID: uid})
            if uid in self._infra:
                infra = await self.client.get(f"/containers/{self._infra[uid]}/json")
                if infra.status_code == 200 and (infra.json().get("State") or {}).get("Running"):
                    return self._infra[uid]
                await self._remove_sandbox_locked(uid)  # its infra died: the pod's network went with it
            name = "k8s_{}_{}_{}".format(labels.get(LABEL_POD, ""), labels.get(LABEL_NAMESPACE, ""), uid[:8])
            spec: dict[str, Any] = {
                "name": name,
                "labels": {k: v for k, v in labels.items() if k in SANDBOX_LABELS},
                "netns": {"nsmode": config.network if config.network in ("none", "bridge") else "none"},
                "portmappings": [
                    {
                        "container_port": p.container_port,
                        "host_port": p.host_port,
                        "protocol": p.protocol,
                        "host_ip": p.host_ip,
                    }
                    for p in config.pod_ports
                    if p.host_port and config.network == "bridge"
                ],
            }
            if config.hostname:
                spec["hostname"] = config.hostname
            reply = await self.client.post(f"http://podman/{LIBPOD}/pods/create", json=spec)
            if reply.status_code == 409:  # a pod of this name survived a crash of ours: replace it
                await self.client.delete(f"http://podman/{LIBPOD}/pods/{name}", params={"force": "true", "t": 0})
                reply = await self.client.post(f"http://podman/{LIBPOD}/pods/create", json=spec)
            pod_id = str(self._check_reply(reply, f"create pod {name}").json()["Id"])
            self._sandboxes[uid] = pod_id
            reply = await self.client.post(f"http://podman/{LIBPOD}/pods/{pod_id}/start")
            self._check_reply(reply, f"start pod {name}", ok_statuses=(304,))
            reply = await self.client.get(f"http://podman/{LIBPOD}/pods/{pod_id}/json")
            self._infra[uid] = str(self._check_reply(reply, f"inspect pod {name}").json()["InfraContainerID"])
            return self._infra[uid]

    async def remove_pod_sandbox(self, uid: str) -> None:
        async with self._sandbox_locks.setdefault(uid, trio.Lock()):
            if uid not in self._sandboxes:
                await self.pod_sandboxes({LABEL_UID: uid})
            await self._remove_sandbox_locked(uid)

    async def _remove_sandbox_locked(self, uid: str) -> None:
        self._sandbox_locks.pop(uid, None)
        pod_id = self._sandboxes.pop(uid, None)
        self._infra.pop(uid, None)
        if pod_id:
            reply = await self.client.delete(f"http://podman/{LIBPOD}/pods/{pod_id}", params={"force": "true", "t": 0})
            self._check_reply(reply, f"remove pod {pod_id[:12]}", ok_statuses=(404,))

    # -- containers, continued -------------------------------------------------------------------------

    async def create_container(self, config: ContainerConfig) -> str:
        if self.pod_sandbox and config.network in ("none", "bridge") and config.labels.get(LABEL_UID):
            await self._sandbox_for(config)
            uid = config.labels[LABEL_UID]
            # podman lets only members of a pod share its infra's namespaces, and only its own API makes members
            reply = await self.client.post(
                f"http://podman/{LIBPOD}/containers/create", json=libpod_spec(config, self._sandboxes[uid])
            )
            self._check_reply(reply, f"create container {config.name}")
            return str(reply.json()["Id"])
        host_config: dict[str, Any] = {
            "NetworkMode": config.network,
            "Binds": [f"{m.host_path}:{m.container_path}:{'ro' if m.read_only else 'rw'}" for m in config.mounts],
            "Privileged": config.privileged,
        }
        if config.memory_limit:
            host_config["Memory"] = config.memory_limit
        if config.cpu_limit:
            host_config["NanoCpus"] = int(config.cpu_limit * 1e9)
        if config.cpu_shares:
            host_config["CpuShares"] = config.cpu_shares
        body: dict[str, Any] = {
            "Image": config.image,
            "Env": [f"{k}={v}" for k, v in config.env.items()],
            "Labels": config.labels,
            "HostConfig": host_config,
            "Tty": config.tty,
            "OpenStdin": config.stdin,
        }
        # Kubernetes semantics: `command` replaces the entrypoint and then the image's CMD is not used.
        if config.command is not None:
            body["Entrypoint"] = config.command
            body["Cmd"] = config.args or []
        elif config.args is not None:
            body["Cmd"] = config.args
        if config.working_dir:
            body["WorkingDir"] = config.working_dir
        if config.hostname and config.network not in ("host",) and not config.network.startswith("container:"):
            body["Hostname"] = config.hostname
        if config.user:
            body["User"] = config.user
        if config.ports:
            exposed: dict[str, dict[str, Any]] = {}
            bindings: dict[str, list[dict[str, str]]] = {}
            for port in config.ports:
                key = f"{port.container_port}/{port.protocol.lower()}"
                exposed[key] = {}
                if port.host_port and config.network not in ("host", "none"):
                    bindings.setdefault(key, []).append({"HostIp": port.host_ip, "HostPort": str(port.host_port)})
            body["ExposedPorts"] = exposed
            if bindings:
                host_config["PortBindings"] = bindings
        reply = await self.client.post("/containers/create", params={"name": config.name}, json=body)
        self._check_reply(reply, f"create container {config.name}")
        return str(reply.json()["Id"])

    async def start_container(self, container_id: str) -> None:
        reply = await self.client.post(f"/containers/{container_id}/start")
        self._check_reply(reply, f"start container {container_id[:12]}", ok_statuses=(304,))

    async def stop_container(self, container_id: str, grace_seconds: float) -> None:
        grace = max(0, math.ceil(grace_seconds))  # the API takes whole seconds; never shorten one
        reply = await self.client.post(
            f"/containers/{container_id}/stop", params={"t": grace}, timeout=self.timeout + grace
        )
        self._check_reply(reply, f"stop container {container_id[:12]}", ok_statuses=(304, 404))

    async def remove_container(self, container_id: str) -> None:
        # libpod's delete takes a stop timeout; the compat one would wait the container's 10 s on a live one
        reply = await self.client.delete(
            f"http://podman/{LIBPOD}/containers/{container_id}", params={"force": "true", "v": "true", "timeout": 0}
        )
        self._check_reply(reply, f"remove container {container_id[:12]}", ok_statuses=(404,))

    async def inspect_container(self, container_id: str) -> ContainerStatus | None:
        reply = await self.client.get(f"/containers/{container_id}/json")
        if reply.status_code == 404:
            return None
        data = self._check_reply(reply, f"inspect container {container_id[:12]}").json()
        state = data.get("State") or {}
        status = ContainerStatus(
            id=str(data.get("Id", "")),
            name=str(data.get("Name", "")).lstrip("/"),
            state=_state(state.get("Status", "")),
            labels=dict((data.get("Config") or {}).get("Labels") or {}),
            image=str((data.get("Config") or {}).get("Image") or data.get("ImageName") or ""),
            image_id=str(data.get("Image", "")),
            started_at=_time(state.get("StartedAt", "")),
            finished_at=_time(state.get("FinishedAt", "")),
            pid=int(state.get("Pid") or 0),
            message=str(state.get("Error") or ""),
        )
        networks = ((data.get("NetworkSettings") or {}).get("Networks")) or {}
        status.ip = str((data.get("NetworkSettings") or {}).get("IPAddress") or "")
        if not status.ip:
            for network in networks.values():
                if network.get("IPAddress"):
                    status.ip = str(network["IPAddress"])
                    break
        uid = status.labels.get(LABEL_UID, "")
        if not status.ip and uid in self._infra and self._infra[uid] != status.id:
            infra = await self.inspect_container(self._infra[uid])
            status.ip = infra.ip if infra is not None else ""
        if status.state == "exited":
            status.exit_code = int(state.get("ExitCode") or 0)
            if state.get("OOMKilled"):
                status.reason = "OOMKilled"
            else:
                status.reason = "Completed" if status.exit_code == 0 else "Error"
        return status

    async def list_containers(self, labels: dict[str, str]) -> list[ContainerStatus]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        reply = await self.client.get("/containers/json", params={"all": "true", "filters": json.dumps(filters)})
        found = []
        for item in self._check_reply(reply, "list containers").json():
            item_labels = item.get("Labels") or {}
            if LABEL_MANAGED in item_labels and LABEL_CONTAINER not in item_labels:
                continue  # a pod's infra container: it carries the pod's labels but is the sandbox's business
            names = item.get("Names") or [""]
            found.append(
                ContainerStatus(
                    id=str(item.get("Id", "")),
                    name=str(names[0]).lstrip("/"),
                    state=_state(item.get("State", "")),
                    labels=dict(item.get("Labels") or {}),
                    image=str(item.get("Image", "")),
                    image_id=str(item.get("ImageID", "")),
                )
            )
        return found

    async def container_stats(self, container_id: str) -> ContainerUsage | None:
        reply = await self.client.get(f"/containers/{container_id}/stats", params={"stream": "false"})
        if reply.status_code in (404, 409):  # gone, or not running any more
            return None
        data = self._check_reply(reply, f"stats of {container_id[:12]}").json()
        return docker_stats_usage(data) if isinstance(data, dict) else None

    async def wait_container(self, container_id: str) -> int:
        """Wait for the container to exit; its exit code."""
        reply = await self.client.post(f"/containers/{container_id}/wait", timeout=None)
        return int(self._check_reply(reply, f"wait for {container_id[:12]}").json().get("StatusCode", -1))

    async def exec_in_container(self, container_id: str, command: list[str], timeout: float) -> tuple[int, bytes]:  # noqa: ASYNC109
        with trio.fail_after(timeout):
            reply = await self.client.post(
                f"/containers/{container_id}/exec",
                json={"Cmd": command, "AttachStdout": True, "AttachStderr": True},
            )
            exec_id = self._check_reply(reply, f"exec in {container_id[:12]}").json()["Id"]
            reply = await self.client.post(f"/exec/{exec_id}/start", json={"Detach": False, "Tty": False})
            output = demultiplex(self._check_reply(reply, f"exec in {container_id[:12]}").content)
            reply = await self.client.get(f"/exec/{exec_id}/json")
            code = self._check_reply(reply, f"exec in {container_id[:12]}").json().get("ExitCode")
        return (int(code) if code is not None else -1), output

    async def container_logs(self, container_id: str, tail: int | None = None) -> str:
        params: dict[str, Any] = {"stdout": 1, "stderr": 1}
        if tail is not None:
            params["tail"] = tail
        reply = await self.client.get(f"/containers/{container_id}/logs", params=params)
        return demultiplex(self._check_reply(reply, f"logs of {container_id[:12]}").content).decode(errors="replace")

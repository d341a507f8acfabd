"""Helpers shared by the control-plane tests: a running embedded apiserver, kubectl, the Python client."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio
import yaml

from kubeedge import Kernel, Plugins
from kubeedge.profile import build_profile

KUBECTL = str(Path(sys.executable).parent / "kubectl")
if not Path(KUBECTL).exists():  # pragma: no cover - a venv without the test extra
    KUBECTL = shutil.which("kubectl") or KUBECTL


@dataclass
class Cloud:
    kernel: Kernel
    api: Any  # the ApiServer module
    data_dir: Path
    cache_dir: Path

    @property
    def kubeconfig(self) -> str:
        assert self.api.kubeconfig_path is not None
        return str(self.api.kubeconfig_path)

    async def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        """Run the real kubectl against this cloud; returns the completed process (stdout/stderr as bytes)."""
        command = [KUBECTL, "--kubeconfig", self.kubeconfig, "--cache-dir", str(self.cache_dir), *args]
        with trio.fail_after(60):
            result = await trio.run_process(
                command,
                stdin=stdin.encode() if stdin is not None else b"",
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        if check and result.returncode != 0:
            output = f"{result.stderr.decode()}\n{result.stdout.decode()}"
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{output}")
        return result

    async def kubectl_json(self, *args: str) -> Any:
        result = await self.kubectl(*args, "-o", "json")
        return json.loads(result.stdout)

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until ``condition()`` holds, re-checking it on every change the API stores (no polling)."""
        store = self.api.store
        watcher = store.watch(None, None, store.rv)
        try:
            with trio.fail_after(timeout):
                while not condition():
                    await watcher.receive.receive()
        finally:
            store.unwatch(watcher)

    def objects(self, key: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """What the API holds now under a storage key such as ``/pods`` or ``devices.kubeedge.io/devices``."""
        return list(self.api.store.list(key, namespace))

    def client(self) -> Any:
        """An ApiClient of the official kubernetes package, configured from the kubeconfig this cloud wrote."""
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=self.kubeconfig, client_configuration=configuration)
        return client.ApiClient(configuration)


@asynccontextmanager
async def running_cloud(data_dir: Path, extra_modules: list[Any] | None = None, **config: Any) -> AsyncIterator[Cloud]:
    """Start a node with the apiserver (port 0) and ``extra_modules``; stop it on exit."""
    from kubeedge.plugins.apiserver.server import ApiServer

    api = ApiServer({"port": 0, **config})
    modules = [api, *(extra_modules or [])]
    profile = build_profile({"role": "cloud", "modules": {m.name: {} for m in modules}}, data_dir=data_dir)
    kernel = Kernel(profile, Plugins(), modules)
    cache_dir = data_dir / "kubectl-cache"
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(kernel.run, handle_signals=False))
        try:
            yield Cloud(kernel, api, data_dir, cache_dir)
        finally:
            kernel.stop()


def manifest(*objects: dict[str, Any]) -> str:
    return yaml.safe_dump_all(list(objects), sort_keys=False)


DEVICE_MODEL = {
    "apiVersion": "devices.kubeedge.io/v1beta1",
    "kind": "DeviceModel",
    "metadata": {"name": "thermometer", "namespace": "default"},
    "spec": {
        "protocol": "modbus",
        "properties": [
            {"name": "temperature", "type": "INT", "accessMode": "ReadOnly", "unit": "C"},
            {"name": "setpoint", "type": "INT", "accessMode": "ReadWrite"},
        ],
    },
}


def device(name: str = "thermo-1", node: str = "edge-1", setpoint: str = "20") -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": "default", "labels": {"model": "thermometer"}},
        "spec": {
            "deviceModelRef": {"name": "thermometer"},
            "nodeName": node,
            "protocol": {"protocolName": "modbus", "configData": {"ip": "127.0.0.1", "port": 5020}},
            "properties": [
                {
                    "name": "temperature",
                    "collectCycle": 1000000000,
                    "reportCycle": 1000000000,
                    "visitors": {"protocolName": "modbus", "configData": {"register": "HoldingRegister", "offset": 0}},
                },
                {
                    "name": "setpoint",
                    "desired": {"value": setpoint},
                    "visitors": {"protocolName": "modbus", "configData": {"register": "HoldingRegister", "offset": 1}},
                },
            ],
        },
    }


class RecordingHub:
    """A module registered on the real bus as ``cloudhub`` (or under ``name``, standing in for an edge module):
    records what it is sent and injects what edges would send up (the routing a real cloudhub does is the
    test's job here)."""

    after: tuple[str, ...] = ()

    def __init__(self, name: str = "cloudhub") -> None:
        self.name = self.group = name
        self.received: list[Any] = []
        self.ctx: Any = None
        self._changed = trio.Event()

    async def run(self, ctx: Any, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        self.ctx = ctx
        task_status.started()
        async for message in ctx.bus.channel(self.name):
            self.received.append(message)
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[Any], bool], timeout: float = 10.0) -> Any:  # noqa: ASYNC109
        """The first recorded message matching ``predicate`` (waiting for it if needed)."""
        with trio.fail_after(timeout):
            while True:
                for message in self.received:
                    if predicate(message):
                        return message
                await self._changed.wait()

    def matching(self, predicate: Callable[[Any], bool]) -> list[Any]:
        return [m for m in self.received if predicate(m)]

    async def upstream(self, target: str, message: Any) -> None:
        await self.ctx.send(target, message)

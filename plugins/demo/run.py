"""``kubeedge demo``: a cloud, one edge node joined with a token over mutual TLS, a simulated thermostat.

Everything runs as a user would run it: ``kubeedge keadm init``, ``kubeedge run`` for the cloud, ``kubeedge
keadm join`` and ``kubeedge run`` for the edge, each node its own process, all data in one directory.
This process serves the thermostat (Modbus TCP), applies its DeviceModel and Device through the cloud's
Kubernetes API and shows the device's twins, the link and message counts live.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import yaml

from . import manifests

CLOUD_READY_TIMEOUT = 60.0
CLOUD_MODULES = ("health", "metrics", "apiserver", "cloudhub", "edgecontroller", "devicecontroller", "synccontroller")
EDGE_MODULES = ("health", "metrics", "edgehub", "metamanager", "eventbus", "twin", "mappers")
DEVICE_GROUP, DEVICE_VERSION, DEVICE_PLURAL = "devices.kubeedge.io", "v1beta1", "devices"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DemoError(Exception):
    """A step of the demo failed; the text says which and why."""


@dataclass
class Ports:
    hub: int = field(default_factory=free_port)
    https: int = field(default_factory=free_port)
    api: int = field(default_factory=free_port)
    cloud_metrics: int = field(default_factory=free_port)
    edge_metrics: int = field(default_factory=free_port)
    mqtt: int = field(default_factory=free_port)


@dataclass
class Demo:
    root: Path
    node: str
    ports: Ports = field(default_factory=Ports)
    processes: dict[str, trio.Process] = field(default_factory=dict)
    kubeconfig: Path | None = None
    modbus_port: int = 0
    out: Any = None  # where progress lines go (stdout by default)

    @property
    def cloud_dir(self) -> Path:
        return self.root / "cloud"

    @property
    def edge_dir(self) -> Path:
        return self.root / "edge"

    @property
    def kubeedge(self) -> str:
        return str(Path(sys.executable).parent / "kubeedge")

    def step(self, text: str) -> None:
        print(f"==> {text}", file=self.out or sys.stdout, flush=True)

    async def command(self, *args: str, what: str) -> str:
        result = await trio.run_process([self.kubeedge, *args], capture_stdout=True, capture_stderr=True, check=False)
        if result.returncode != 0:
            detail = (result.stderr.decode().strip() or result.stdout.decode().strip()).splitlines()
            raise DemoError(f"{what} failed: {detail[-1] if detail else f'exit {result.returncode}'}")
        return result.stdout.decode()

    async def start_node(self, name: str, profile: Path, log_path: Path, *overrides: str) -> None:
        args = ["run", "--profile", str(profile)]
        if os.environ.get("KUBEEDGE_DEMO_LOG_LEVEL"):  # e.g. debug, to see inside the nodes' logs
            args += ["--set", f"logLevel={os.environ['KUBEEDGE_DEMO_LOG_LEVEL']}"]
        for item in overrides:
            args += ["--set", item]
        await self.spawn(name, args, log_path)

    async def spawn(self, name: str, kubeedge_args: list[str], log_path: Path) -> None:
        """Start ``kubeedge ARGS`` as process ``name``, its output appended to ``log_path``."""
        log_file = await trio.Path(log_path).open("ab")
        try:
            self.processes[name] = await trio.lowlevel.open_process(
                [self.kubeedge, *kubeedge_args], stdout=log_file.wrapped, stderr=log_file.wrapped
            )
        finally:
            await log_file.aclose()

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.returncode is not None:
                raise DemoError(
                    f"the {name} process exited with status {process.returncode}; see {self.root}/{name}.log"
                )

    async def stop_node(self, name: str, *, kill: bool = False) -> None:
        """Stop one node's process (SIGTERM, or SIGKILL as a crash would) and wait for it."""
        process = self.processes.pop(name)
        if process.returncode is None:
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        with trio.move_on_after(15):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()

    async def restart_node(self, name: str) -> None:
        profile = self.cloud_dir / "cloud.yaml" if name == "cloud" else self.edge_dir / "demo-edge.yaml"
        overrides = (
            [f"modules.apiserver.port={self.ports.api}", f"modules.metrics.port={self.ports.cloud_metrics}"]
            if name == "cloud"
            else []
        )
        await self.start_node(name, profile, self.root / f"{name}.log", *overrides)

    async def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        with trio.move_on_after(15):
            for process in self.processes.values():
                await process.wait()
        for process in self.processes.values():
            if process.returncode is None:
                process.kill()


async def start_cloud(demo: Demo) -> None:
    demo.step(f"keadm init: CA, certificates, token and profile in {demo.cloud_dir}")
    ports = demo.ports
    await demo.command(
        "keadm",
        "init",
        "--advertise-address",
        "127.0.0.1",
        "--data-dir",
        str(demo.cloud_dir),
        "--port",
        str(ports.hub),
        "--https-port",
        str(ports.https),
        "--modules",
        ",".join(CLOUD_MODULES),
        what="keadm init",
    )
    demo.step("starting the cloud (embedded Kubernetes API, cloudhub, controllers)")
    await demo.start_node(
        "cloud",
        demo.cloud_dir / "cloud.yaml",
        demo.root / "cloud.log",
        f"modules.apiserver.port={ports.api}",
        f"modules.metrics.port={ports.cloud_metrics}",
    )
    demo.kubeconfig = demo.cloud_dir / "kubeconfig.yaml"
    with trio.move_on_after(CLOUD_READY_TIMEOUT) as scope:
        while not await api_ready(demo):
            demo.check_alive()
            await trio.sleep(0.2)
    if scope.cancelled_caught:
        raise DemoError(f"the cloud's API did not become ready in {CLOUD_READY_TIMEOUT:g} s; see {demo.root}/cloud.log")


async def api_ready(demo: Demo) -> bool:
    if demo.kubeconfig is None or not demo.kubeconfig.exists():
        return False
    try:
        await trio.to_thread.run_sync(lambda: api(demo).core.list_namespace(limit=1))
    except Exception:
        return False
    return True


async def join_edge(
    demo: Demo, *, in_process_mapper: bool = True, extra_modules: dict[str, dict[str, Any]] | None = None
) -> None:
    token = (await demo.command("keadm", "gettoken", "--data-dir", str(demo.cloud_dir), what="keadm gettoken")).strip()
    demo.step(f"keadm join: node {demo.node} fetches the CA, checks its hash and gets its certificate")
    await demo.command(
        "keadm",
        "join",
        "--cloudcore-ipport",
        f"127.0.0.1:{demo.ports.hub}",
        "--certport",
        str(demo.ports.https),
        "--token",
        token.splitlines()[-1],
        "--edgenode-name",
        demo.node,
        "--data-dir",
        str(demo.edge_dir),
        "--modules",
        ",".join(EDGE_MODULES),
        what="keadm join",
    )
    profile = yaml.safe_load((demo.edge_dir / "edge.yaml").read_text())
    modules = profile.setdefault("modules", {})
    modules.setdefault("metrics", {})["port"] = demo.ports.edge_metrics
    eventbus = modules.setdefault("eventbus", {})
    eventbus["mqttMode"] = 0  # the embedded broker only: nothing else to install
    eventbus["mqttServerInternal"] = f"tcp://127.0.0.1:{demo.ports.mqtt}"
    modules.setdefault("twin", {})
    if in_process_mapper:
        modules["mappers"] = {**(modules.get("mappers") or {}), "broker": f"mqtt://127.0.0.1:{demo.ports.mqtt}"}
        profile.setdefault("mappers", {}).setdefault("modbus", {})
    else:
        modules.pop("mappers", None)
        profile.pop("mappers", None)
    modules.update(extra_modules or {})
    demo_profile = demo.edge_dir / "demo-edge.yaml"
    demo_profile.write_text(yaml.safe_dump(profile, sort_keys=False))
    demo.step(
        f"starting edge node {demo.node} (edgehub, metamanager, eventbus, twin"
        f"{', modbus mapper' if in_process_mapper else ''})"
    )
    await demo.start_node("edge", demo_profile, demo.root / "edge.log")


@dataclass
class Api:
    core: Any
    custom: Any


def api(demo: Demo) -> Api:
    from kubernetes import client, config

    assert demo.kubeconfig is not None
    api_client = config.new_client_from_config(config_file=str(demo.kubeconfig))
    return Api(client.CoreV1Api(api_client), client.CustomObjectsApi(api_client))


def apply_device(demo: Demo) -> None:
    from kubernetes.client.exceptions import ApiException

    clients = api(demo)
    for body, plural in (
        (manifests.device_model(), "devicemodels"),
        (manifests.device(demo.node, demo.modbus_port), DEVICE_PLURAL),
    ):
        try:
            clients.custom.create_namespaced_custom_object(DEVICE_GROUP, DEVICE_VERSION, "default", plural, body)
        except ApiException as exc:
            if exc.status != 409:
                raise DemoError(f"applying {body['kind']} failed: {exc.status} {exc.reason}: {exc.body}") from None


def snapshot(demo: Demo) -> dict[str, Any]:
    clients = api(demo)
    view: dict[str, Any] = {"node": "unknown", "device": None}
    from kubernetes.client.exceptions import ApiException

    try:
        node = json.loads(clients.core.read_node(demo.node, _preload_content=False).data)
        conditions = (node.get("status") or {}).get("conditions") or []
        ready: dict[str, Any] = next((c for c in conditions if c.get("type") == "Ready"), {})
        view["node"] = ("Ready" if ready.get("status") == "True" else "NotReady") + (
            f" ({ready['reason']})" if ready.get("reason") else ""
        )
    except ApiException as exc:
        view["node"] = "not registered yet" if exc.status == 404 else f"unknown ({exc.status} {exc.reason})"
    except Exception as exc:  # the cloud is restarting, say; the next refresh will tell
        view["node"] = f"unknown ({type(exc).__name__})"
    try:
        view["device"] = clients.custom.get_namespaced_custom_object(
            DEVICE_GROUP, DEVICE_VERSION, "default", DEVICE_PLURAL, manifests.DEVICE
        )
    except Exception:
        view["device"] = None
    return view


def message_count(port: int) -> int | None:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
    except httpx.HTTPError:
        return None
    return int(
        sum(
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "kubeedge_bus_messages_total"
        )
    )


def render(demo: Demo, view: dict[str, Any], started: float) -> list[str]:
    device = view.get("device") or {}
    status = device.get("status") or {}
    desired = {
        p["name"]: (p.get("desired") or {}).get("value", "") for p in (device.get("spec") or {}).get("properties", [])
    }
    reported = {t["propertyName"]: t for t in status.get("twins", []) or []}
    cloud_msgs = message_count(demo.ports.cloud_metrics)
    edge_msgs = message_count(demo.ports.edge_metrics)
    lines = [
        f"kubeedge demo, {time.monotonic() - started:5.0f} s   (data in {demo.root}; Ctrl-C stops)",
        f"edge node {demo.node}: {view['node']}   messages: cloud {cloud_msgs if cloud_msgs is not None else '-'},"
        f" edge {edge_msgs if edge_msgs is not None else '-'}",
        f"device default/{manifests.DEVICE} (Modbus TCP 127.0.0.1:{demo.modbus_port}): state"
        f" {status.get('state', 'unknown')}, last online {status.get('lastOnlineTime', '-')}",
        f"  {'PROPERTY':<12} {'REPORTED':>10} {'DESIRED':>10}",
    ]
    for name in ("temperature", "humidity", "setpoint", "power"):
        value = ((reported.get(name) or {}).get("reported") or {}).get("value", "-")
        lines.append(f"  {name:<12} {value:>10} {desired.get(name, '') or '':>10}")
    return lines


def hints(demo: Demo) -> str:
    kubectl = Path(sys.executable).parent / "kubectl"
    kubectl_cmd = str(kubectl) if kubectl.exists() else (shutil.which("kubectl") or "kubectl")
    patch = json.dumps([{"op": "replace", "path": "/spec/properties/2/desired/value", "value": "25"}])
    return "\n".join(
        [
            "Try, in another terminal:",
            f"  export KUBECONFIG={demo.kubeconfig}",
            f"  {kubectl_cmd} get nodes",
            f"  {kubectl_cmd} get device {manifests.DEVICE} -o yaml         # status.twins[].reported",
            f"  {kubectl_cmd} patch device {manifests.DEVICE} --type json -p '{patch}'   # setpoint 25.0",
            "  ... and watch the setpoint's register, then the temperature, follow.",
        ]
    )


async def show(demo: Demo, plain: bool) -> None:
    started = time.monotonic()
    previous: list[str] = []
    while True:
        demo.check_alive()
        view = await trio.to_thread.run_sync(snapshot, demo)
        lines = await trio.to_thread.run_sync(render, demo, view, started)
        if plain:
            if lines[1:] != previous[1:]:
                print(" | ".join(line.strip() for line in lines[1:]), flush=True)
        else:
            sys.stdout.write("\x1b[H\x1b[J" + "\n".join(lines) + "\n\n" + hints(demo) + "\n")
            sys.stdout.flush()
        previous = lines
        await trio.sleep(1.0)


async def run_demo(args: argparse.Namespace) -> int:
    import trio_asyncio

    from .simulator import Thermostat

    demo = Demo(root=args.root, node=args.node)
    plain = args.plain or not sys.stdout.isatty()
    async with trio_asyncio.open_loop():
        try:
            async with trio.open_nursery() as nursery:
                demo.step("starting a simulated Modbus TCP thermostat")
                demo.modbus_port = await nursery.start(Thermostat().run)
                await start_cloud(demo)
                await join_edge(demo)
                demo.step("applying DeviceModel thermostat-model and Device thermostat")
                await trio.to_thread.run_sync(apply_device, demo)
                print(hints(demo), flush=True)
                with trio.move_on_after(args.duration if args.duration is not None else float("inf")):
                    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                        nursery.start_soon(show, demo, plain)
                        async for _ in signals:
                            break
                nursery.cancel_scope.cancel()
        except DemoError as exc:
            print(f"kubeedge demo: {exc}", file=sys.stderr)
            return 2
        finally:
            with trio.CancelScope(shield=True):
                demo.step("stopping")
                await demo.stop()
    return 0


def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    args.root = Path(args.data_dir).resolve()
    args.root.mkdir(parents=True, exist_ok=True)
    return trio.run(run_demo, args)

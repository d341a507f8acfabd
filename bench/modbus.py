"""Modbus polling benchmark: one mapper process polling a pymodbus TCP simulator.

100 devices x 50 holding registers (each device its own TCP connection and unit id, the simulator in a
separate process), collected as fast as the mapper can (collectCycle 1 ms) and reported to a real
mosquitto every second, with coalescing (one request per device per cycle) and without (one request per
register). Also the RSS of the `pi` profile with one Modbus device.

Prints one JSON object: points_per_s, points_per_s_uncoalesced, cpu_percent (the mapper process while
coalescing; 100 = one core), pi_rss_mb.

    .venv/bin/python bench/modbus.py [--devices 100] [--registers 50] [--seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


# -- the simulator (a separate process) -----------------------------------------------------------------


def serve(port: int, devices: int, registers: int) -> None:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    logging.disable(logging.CRITICAL)

    def one(unit: int) -> Any:
        bits = [SimData(0, count=8, values=False, datatype=DataType.BITS)]
        regs = [SimData(0, count=registers, values=list(range(registers)), datatype=DataType.REGISTERS)]
        return SimDevice(id=unit, simdata=(bits, bits, regs, regs))

    async def main() -> None:
        server = ModbusTcpServer([one(u) for u in range(1, devices + 1)], address=("127.0.0.1", port))
        await server.serve_forever()

    asyncio.run(main())


# -- the mapper (this process) --------------------------------------------------------------------------


def device_objects(port: int, devices: int, registers: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    model = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": "bench-model", "namespace": "default"},
        "spec": {"protocol": "modbus", "properties": [{"name": f"r{i}", "type": "INT"} for i in range(registers)]},
    }
    out = []
    for unit in range(1, devices + 1):
        properties = [
            {
                "name": f"r{i}",
                "collectCycle": 1_000_000,  # 1 ms: as fast as it goes
                "reportCycle": 1_000_000_000,
                "visitors": {"protocolName": "modbus", "configData": {"register": "HoldingRegister", "offset": i}},
            }
            for i in range(registers)
        ]
        out.append(
            {
                "apiVersion": "devices.kubeedge.io/v1beta1",
                "kind": "Device",
                "metadata": {"name": f"dev{unit}", "namespace": "default"},
                "spec": {
                    "deviceModelRef": {"name": "bench-model"},
                    "protocol": {
                        "protocolName": "modbus",
                        "configData": {"ip": "127.0.0.1", "port": port, "slaveID": unit, "timeout": 5000},
                    },
                    "properties": properties,
                },
            }
        )
    return model, out


def poll(port: int, broker: str, devices: int, registers: int, seconds: float, coalesce: bool) -> tuple[float, float]:
    import trio
    import trio_asyncio

    from kubeedge.mappers.sdk import parse_device
    from kubeedge.mappers.sdk.runtime import Mapper
    from kubeedge.registry import Plugins

    model, objects = device_objects(port, devices, registers)
    configs = [parse_device(obj, model) for obj in objects]
    spec = Plugins().mapper_driver("modbus")
    result: dict[str, float] = {}

    async def main() -> None:
        async with trio_asyncio.open_loop() as loop:
            loop.set_exception_handler(lambda _loop, _context: None)
            mapper = Mapper([spec], broker=broker, devices=configs, coalesce=coalesce, timeout=10)
            async with trio.open_nursery() as nursery:
                await nursery.start(mapper.run)
                with trio.fail_after(30):
                    for worker in list(mapper.workers.values()):
                        await worker.wait_for(lambda w: w.reads > 0)
                await trio.sleep(0.5)  # warm up

                def sample() -> tuple[int, float, float]:
                    reads = sum(w.reads for w in mapper.workers.values())
                    return reads, time.perf_counter(), time.process_time()

                reads0, wall0, cpu0 = sample()
                await trio.sleep(seconds)
                reads1, wall1, cpu1 = sample()
                result["rate"] = (reads1 - reads0) / (wall1 - wall0)
                result["cpu"] = 100.0 * (cpu1 - cpu0) / (wall1 - wall0)
                nursery.cancel_scope.cancel()

    trio.run(main)
    return result["rate"], result["cpu"]


# -- the pi profile's memory ----------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pi_rss(port: int, broker: str, workdir: Path) -> float:
    """RSS of `kubeedge run --profile pi` hosting one Modbus device (settled, after it reports).

    Without a cloud to bootstrap from, edgehub cannot start; the profile then runs without it (stderr
    says so), which leaves out edgehub's own share.
    """
    import yaml

    model, objects = device_objects(port, 1, 10)
    devices = workdir / "pi-device.yaml"
    devices.write_text(yaml.safe_dump_all([model, objects[0]]))
    try:
        return _run_rss("pi", devices, broker, workdir)
    except RuntimeError as exc:
        print(f"bench/modbus.py: {str(exc).strip().splitlines()[-1]}; measuring pi without edgehub", file=sys.stderr)
    from importlib import resources

    profile = yaml.safe_load(resources.files("kubeedge.profiles").joinpath("pi.yaml").read_text())
    profile["modules"].pop("edgehub", None)
    path = workdir / "pi-no-edgehub.yaml"
    path.write_text(yaml.safe_dump(profile))
    return _run_rss(str(path), devices, broker, workdir)


def _run_rss(profile: str, devices: Path, broker: str, workdir: Path) -> float:
    kubeedge = Path(sys.executable).parent / "kubeedge"
    command = [
        str(kubeedge),
        "run",
        "--profile",
        profile,
        "--data-dir",
        str(workdir / "pi"),
        "--set",
        f"mappers.modbus.devices=[{devices}]",
        "--set",
        f"modules.mappers.broker={broker}",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)
        if process.poll() is not None:
            raise RuntimeError(f"the pi profile did not run: {process.stderr.read()[-500:] if process.stderr else ''}")
        return rss_mb(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--registers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.devices, args.registers)
        return
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-modbus-") as tmp:
        workdir = Path(tmp)
        port, mqtt_port = free_port(), free_port()
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\n")
        mosquitto = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        simulator = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                str(port),
                "--devices",
                str(args.devices),
                "--registers",
                str(args.registers),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(port, time.monotonic() + 30)
            wait_port(mqtt_port, time.monotonic() + 10)
            broker = f"mqtt://127.0.0.1:{mqtt_port}"
            rate, cpu = poll(port, broker, args.devices, args.registers, args.seconds, coalesce=True)
            rate_uncoalesced, _ = poll(port, broker, args.devices, args.registers, args.seconds, coalesce=False)
            try:
                pi = round(pi_rss(port, broker, workdir), 1)
            except RuntimeError as exc:
                print(f"bench/modbus.py: {exc}", file=sys.stderr)
                pi = None
        finally:
            for process in (simulator, mosquitto):
                process.terminate()
                process.wait(10)
    print(
        json.dumps(
            {
                "points_per_s": round(rate),
                "points_per_s_uncoalesced": round(rate_uncoalesced),
                "cpu_percent": round(cpu, 1),
                "pi_rss_mb": pi,
            }
        )
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

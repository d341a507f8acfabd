"""The metrics endpoint, parsed by prometheus-client's own parser, and `kubeedge status` against it."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from kubeedge import Kernel, Message
from kubeedge.profile import build_profile


def node(tmp_path: Path) -> Kernel:
    profile = build_profile(
        {"role": "edge", "node": {"name": "edge-m"}, "modules": {"health": {}, "metrics": {"port": 0}}},
        data_dir=tmp_path,
    )
    return Kernel.from_profile(profile)


def metrics_port(kernel: Kernel) -> int:
    module = next(m for m in kernel.modules if m.name == "metrics")
    port = getattr(module, "port", None)
    assert isinstance(port, int)
    return port


async def test_metrics_endpoint_is_valid_prometheus_text(tmp_path: Path) -> None:
    kernel = node(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(kernel.run)
        for _ in range(3):
            await kernel.bus.send_sync("health", Message(source="t", operation="ping"), timeout=5)
        kernel.ctx.metrics.inc("kubeedge_twin_updates_total", device="default/thermo", help="Twin updates")
        kernel.ctx.metrics.set("kubeedge_hub_sessions", 2, help="Connected edge nodes")
        kernel.ctx.metrics.observe("kubeedge_hub_ack_latency_seconds", 0.004)
        kernel.ctx.metrics.observe("kubeedge_hub_ack_latency_seconds", 0.006)
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{metrics_port(kernel)}/metrics")
            missing = await client.get(f"http://127.0.0.1:{metrics_port(kernel)}/nope")
        kernel.stop()
    assert response.status_code == 200
    assert missing.status_code == 404
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples[("kubeedge_node_info", (("node", "edge-m"), ("role", "edge")))] == 1
    assert samples[("kubeedge_module_up", (("module", "health"), ("state", "running")))] == 1
    assert samples[("kubeedge_bus_messages_total", (("module", "health"),))] == 3
    assert samples[("kubeedge_bus_queue_depth", (("module", "health"),))] == 0
    assert samples[("kubeedge_twin_updates_total", (("device", "default/thermo"),))] == 1
    assert samples[("kubeedge_hub_sessions", ())] == 2
    assert samples[("kubeedge_hub_ack_latency_seconds_count", ())] == 2
    assert abs(samples[("kubeedge_hub_ack_latency_seconds_sum", ())] - 0.010) < 1e-9


async def test_kubeedge_status_summarises_a_running_node(tmp_path: Path) -> None:
    kernel = node(tmp_path)
    kubeedge = str(Path(sys.executable).parent / "kubeedge")
    async with trio.open_nursery() as nursery:
        await nursery.start(kernel.run)
        url = f"http://127.0.0.1:{metrics_port(kernel)}/metrics"
        result = await trio.run_process([kubeedge, "status", "--url", url], capture_stdout=True, check=False)
        kernel.stop()
    assert result.returncode == 0
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "node edge-m (edge)"
    assert lines[1] == "modules: health running, metrics running"


async def test_kubeedge_status_of_a_node_that_is_not_there_is_a_clear_error() -> None:
    kubeedge = str(Path(sys.executable).parent / "kubeedge")
    with trio.socket.socket() as sock:  # a port nothing listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await trio.run_process(
        [kubeedge, "status", "--url", f"http://127.0.0.1:{port}/metrics"], capture_stderr=True, check=False
    )
    assert result.returncode == 2
    assert b"cannot read" in result.stderr and b"metrics module" in result.stderr


def test_status_summary_has_a_line_per_part_that_reported() -> None:
    """`kubeedge status` turns the modules' numbers into sentences; what it summarises is not listed again."""
    from kubeedge.metrics import Metrics
    from kubeedge.plugins.metrics.exposition import summarise

    metrics = Metrics()
    metrics.set("kubeedge_hub_sessions", 3)
    metrics.observe("kubeedge_hub_ack_latency_seconds", 0.002)
    metrics.observe("kubeedge_hub_ack_latency_seconds", 0.004)
    metrics.set("kubeedge_edgehub_connected", 0)
    metrics.set("kubeedge_edgehub_upload_backlog", 7)
    metrics.set("kubeedge_twin_devices", 2)
    metrics.inc("kubeedge_twin_updates_total", 5, source="mapper")
    metrics.set("kubeedge_mapper_device_online", 1, protocol="modbus", device="default/a")
    metrics.set("kubeedge_mapper_device_online", 0, protocol="modbus", device="default/b")
    metrics.inc("kubeedge_mapper_points_read_total", 40, protocol="modbus", device="default/a")
    lines: list[str] = []
    for sample in metrics.samples():
        labels = ",".join(f'{k}="{v}"' for k, v in sample.labels)
        suffix = f"{{{labels}}}" if labels else ""
        if sample.kind == "summary":
            lines += [f"{sample.name}_count{suffix} {sample.count}", f"{sample.name}_sum{suffix} {sample.value}"]
        else:
            lines.append(f"{sample.name}{suffix} {sample.value}")
    text = "\n".join(lines) + "\n"
    summary = summarise(text)
    assert "cloudhub: 3 edge nodes connected, 2 messages acknowledged (mean 3.0 ms)" in summary
    assert "edgehub: NOT connected (working on its own) to the cloud, 7 messages waiting" in summary
    assert "twin: 2 devices, 5 updates from mappers, 0 from the cloud, 0 not yet reported" in summary
    assert "mappers: 1 of 2 devices online, 40 points read, 0 errors" in summary
    assert not any(line.startswith("kubeedge_mapper_device_online") for line in summary), summary

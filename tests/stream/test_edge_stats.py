"""kubelet's stats paths answered by a real edge (edged on podman) through the cloud's tunnel session."""

from __future__ import annotations

import json
from typing import Any

import trio
from prometheus_client.parser import text_string_to_metric_families

from kubeedge.plugins.common.stream_protocol import CLOSE, DATA, METRIC, MetricsRequest

from .conftest import Cluster, make_pod


async def metric(cluster: Cluster, path: str, query: str = "") -> tuple[dict[str, Any], bytes]:
    """Open a METRIC connection on the node's tunnel: the edge's reply and the body it sent."""
    stream = cluster.cloudstream.tunnels.session(cluster.node_name).open()
    body = b""
    try:
        await stream.send(METRIC, MetricsRequest(path, query).encode())
        with trio.fail_after(20):
            first = await stream.receive()
            assert first is not None and first.type == METRIC, first
            reply = first.json()
            while True:
                frame = await stream.receive()
                assert frame is not None, "the tunnel went away"
                if frame.type == CLOSE:
                    assert frame.json() == {}
                    break
                assert frame.type == DATA and frame.data[:1] == b"\x01", frame
                body += frame.data[1:]
    finally:
        await stream.aclose()
    return reply, body


def pod_entry(summary: dict[str, Any], name: str) -> dict[str, Any]:
    found = [p for p in summary["pods"] if p["podRef"]["name"] == name]
    assert len(found) == 1, [p["podRef"] for p in summary["pods"]]
    return found[0]


async def test_summary_and_resource_metrics_of_a_busy_and_a_sleeping_pod(cluster: Cluster) -> None:
    busy = make_pod("spinner", cluster.node_name, [{"name": "spin", "command": ["sh", "-c", "while true; do :; done"]}])
    idle = make_pod("sleeper", cluster.node_name, [{"name": "nap", "command": ["sleep", "3600"]}])
    for pod in (busy, idle):
        await cluster.store.put(pod)
    for pod in (busy, idle):
        await cluster.store.wait_running("default", pod["metadata"]["name"])

    reply, body = await metric(cluster, "/stats/summary")
    assert reply == {"ok": True, "contentType": "application/json"}
    summary = json.loads(body)
    node = summary["node"]
    assert node["nodeName"] == cluster.node_name
    assert node["cpu"]["usageCoreNanoSeconds"] > 0
    assert node["cpu"]["usageNanoCores"] > 0
    assert node["memory"]["workingSetBytes"] > 0
    assert node["memory"]["availableBytes"] > 0
    assert node["fs"]["capacityBytes"] > 0 and node["fs"]["availableBytes"] > 0
    assert node["runtime"]["imageFs"]["usedBytes"] > 0  # the busybox image at least
    assert node["startTime"].endswith("Z")
    [own] = node["systemContainers"]
    assert own["name"] == "kubelet" and own["memory"]["workingSetBytes"] > 0

    spinner = pod_entry(summary, "spinner")
    assert spinner["podRef"] == {"name": "spinner", "namespace": "default", "uid": busy["metadata"]["uid"]}
    [spin] = spinner["containers"]
    assert spin["name"] == "spin" and spin["startTime"].endswith("Z")
    assert spin["cpu"]["usageNanoCores"] > 50_000_000, spin["cpu"]  # a busy loop: well over 0.05 cores
    assert spin["memory"]["workingSetBytes"] > 0
    assert spinner["cpu"]["usageCoreNanoSeconds"] == spin["cpu"]["usageCoreNanoSeconds"]
    [nap] = pod_entry(summary, "sleeper")["containers"]
    assert nap["cpu"]["usageNanoCores"] < 10_000_000, nap["cpu"]
    assert nap["cpu"]["usageNanoCores"] * 10 < spin["cpu"]["usageNanoCores"]

    # a second request soon after uses the first one's counters for the rate
    reply, body = await metric(cluster, "/stats/summary", "only_cpu_and_memory=true")
    assert reply["ok"] is True
    lean = json.loads(body)
    assert "fs" not in lean["node"] and "network" not in lean["node"] and "runtime" not in lean["node"]
    assert lean["node"]["memory"]["workingSetBytes"] > 0
    assert pod_entry(lean, "spinner")["containers"][0]["cpu"]["usageNanoCores"] > 50_000_000
    assert all("network" not in pod for pod in lean["pods"])

    reply, body = await metric(cluster, "/metrics/resource")
    assert reply == {"ok": True, "contentType": "text/plain; version=0.0.4; charset=utf-8"}
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    spin_labels = (("container", "spin"), ("namespace", "default"), ("pod", "spinner"))
    spin_cpu = samples[("container_cpu_usage_seconds_total", spin_labels)]
    assert spin_cpu.value > 0 and spin_cpu.timestamp is not None
    assert samples[("container_memory_working_set_bytes", spin_labels)].value > 0
    assert samples[("container_start_time_seconds", spin_labels)].value > 1_600_000_000
    assert samples[("pod_cpu_usage_seconds_total", (("namespace", "default"), ("pod", "spinner")))].value > 0
    assert samples[("node_cpu_usage_seconds_total", ())].value > 0
    assert samples[("node_memory_working_set_bytes", ())].value > 0
    assert samples[("scrape_error", ())].value == 0


async def test_unknown_stats_path_and_bad_request(cluster: Cluster) -> None:
    reply, body = await metric(cluster, "/stats/nothing")
    assert reply["ok"] is False and reply["code"] == 404, reply
    assert "/stats/nothing" in reply["message"] and "/stats/summary" in reply["message"]
    assert body == b""

    stream = cluster.cloudstream.tunnels.session(cluster.node_name).open()
    try:
        await stream.send(METRIC, b'{"query": 1}')
        with trio.fail_after(10):
            frame = await stream.receive()
        assert frame is not None and frame.type == METRIC
        assert frame.json()["code"] == 400 and "path" in frame.json()["message"]
    finally:
        await stream.aclose()

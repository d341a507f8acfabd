"""Node and pod stats from a real edge through the tunnel, seen with the real kubectl: the node proxy
(``kubectl get --raw /api/v1/nodes/<node>/proxy/stats/summary``) and ``kubectl top`` on the embedded
resource metrics API, with no metrics-server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Cluster, make_pod

BUSY = "while true; do :; done"


def _millicores(text: str) -> int:
    match = re.fullmatch(r"(\d+)m?", text)
    assert match, text
    return int(match.group(1)) * (1 if text.endswith("m") else 1000)


async def _register_node(cluster: Cluster) -> None:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": cluster.node_name, "labels": {"node-role.kubernetes.io/edge": ""}},
        "status": {
            "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
        },
    }
    path = Path(cluster.home) / "node.json"
    await trio.Path(path).write_text(json.dumps(node))
    result = await cluster.kubectl("create", "--validate=false", "-f", str(path))
    assert result.returncode == 0, result.stderr.decode()


async def test_stats_and_kubectl_top(cluster: Cluster) -> None:
    await _register_node(cluster)
    await cluster.create_pod(make_pod("spinner", cluster.node_name, [{"name": "spin", "command": ["sh", "-c", BUSY]}]))
    await cluster.create_pod(make_pod("sleeper", cluster.node_name, [{"name": "nap", "command": ["sleep", "3600"]}]))

    # the node proxy: kubelet's Summary API, answered by the edge
    raw = f"/api/v1/nodes/{cluster.node_name}/proxy/stats/summary"
    result = await cluster.kubectl("get", "--raw", raw)
    assert result.returncode == 0, result.stderr.decode()
    summary = json.loads(result.stdout)
    assert summary["node"]["nodeName"] == cluster.node_name
    assert summary["node"]["cpu"]["usageCoreNanoSeconds"] > 0
    assert summary["node"]["memory"]["workingSetBytes"] > 0
    pods = {p["podRef"]["name"]: p for p in summary["pods"]}
    assert {"spinner", "sleeper"} <= set(pods), sorted(pods)
    assert [c["name"] for c in pods["spinner"]["containers"]] == ["spin"]

    # what metrics-server would scrape, in Prometheus text
    result = await cluster.kubectl("get", "--raw", f"/api/v1/nodes/{cluster.node_name}/proxy/metrics/resource")
    assert result.returncode == 0, result.stderr.decode()
    families = {f.name: f for f in text_string_to_metric_families(result.stdout.decode())}
    cpu_seconds = {
        s.labels["pod"]: s.value for s in families["container_cpu_usage_seconds"].samples if s.name.endswith("_total")
    }
    assert cpu_seconds["spinner"] > cpu_seconds["sleeper"], cpu_seconds

    # kubectl top node / pod: the resource metrics API, served from the same stats
    result = await cluster.kubectl("top", "node")
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert lines[0].split()[:3] == ["NAME", "CPU(cores)", "CPU(%)"], lines
    row = next(line.split() for line in lines[1:] if line.startswith(cluster.node_name))
    assert _millicores(row[1]) > 0 and row[3].endswith("Mi"), row

    result = await cluster.kubectl("top", "pod", "--containers")
    assert result.returncode == 0, result.stderr.decode()
    usage = {}
    for line in result.stdout.decode().splitlines()[1:]:
        pod, container, cpu, memory = line.split()
        usage[(pod, container)] = (_millicores(cpu), memory)
    assert usage[("spinner", "spin")][0] >= 50, usage  # a busy loop (its share of a loaded machine)
    assert usage[("sleeper", "nap")][0] < usage[("spinner", "spin")][0] / 10, usage
    assert usage[("spinner", "spin")][1].endswith("Mi"), usage

    result = await cluster.kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/spinner")
    assert result.returncode == 0, result.stderr.decode()
    metrics = json.loads(result.stdout)
    assert metrics["kind"] == "PodMetrics" and metrics["containers"][0]["name"] == "spin"

    # clear errors: an unknown node, a pod without metrics, a write
    result = await cluster.kubectl("get", "--raw", "/api/v1/nodes/nosuch/proxy/stats/summary")
    assert result.returncode != 0 and b"nosuch" in result.stderr and b"not found" in result.stderr, result.stderr
    result = await cluster.kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nosuch")
    assert result.returncode != 0 and b"not found" in result.stderr, result.stderr
    result = await cluster.kubectl("get", "--raw", f"/api/v1/nodes/{cluster.node_name}/proxy/nosuch")
    assert result.returncode != 0 and b"nosuch" in result.stderr, result.stderr

    # the node goes offline: the proxy says so at once, and kubectl top has no metrics for it
    assert cluster.edge is not None
    await cluster.edge.stop()
    with trio.fail_after(10):
        while cluster.node_name in cluster.cloudstream.tunnels.sessions:
            await cluster.cloudstream.tunnels.changed.wait()
    result = await cluster.kubectl("get", "--raw", raw, timeout=10)
    assert result.returncode != 0 and b"offline" in result.stderr, result.stderr
    result = await cluster.kubectl("top", "node", cluster.node_name, timeout=20)
    assert result.returncode != 0 and b"offline" in result.stderr, result.stderr

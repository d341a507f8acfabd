"""edged registers its Node and reports node status through metamanager."""

from __future__ import annotations

import os
import platform

from .conftest import EdgeFactory


async def test_node_registers_and_reports_status(edge_factory: EdgeFactory) -> None:
    edge = await edge_factory(nodeStatusInterval=0.2)
    store = edge.store
    node = await store.wait_for(lambda: store.node)
    assert node["kind"] == "Node" and node["metadata"]["name"] == edge.name
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == edge.name
    assert "node-role.kubernetes.io/edge" in labels and labels["site"] == "lab"  # the profile's node labels
    status = node["status"]
    assert status["capacity"]["cpu"] == str(os.cpu_count())
    assert status["capacity"]["memory"].endswith("Ki") and int(status["capacity"]["memory"][:-2]) > 0
    assert status["allocatable"]["pods"] == "110"
    assert {"type": "InternalIP", "address": "127.0.0.1"} in status["addresses"]
    info = status["nodeInfo"]
    assert info["operatingSystem"] == "linux" and info["architecture"] in ("amd64", "arm64", platform.machine())
    assert info["kubeletVersion"].startswith("v1.") and info["containerRuntimeVersion"].startswith("podman://4.")
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in status["conditions"])

    await store.wait_for(lambda: len(store.node_statuses) >= 2, timeout=5)
    report = store.node_statuses[-1]
    assert report["Status"]["nodeInfo"] == info
    assert report["Status"]["conditions"][0]["lastHeartbeatTime"]

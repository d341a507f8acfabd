"""Issue 7's whole journey: a Deployment applied with kubectl on the embedded cloud runs busybox containers on
a joined edge through podman, shows Running in `kubectl get pods`, and survives an edge restart while the
cloud is down: the same containers keep running, and no pod is deleted or recreated when the cloud returns."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import trio

from .conftest import (
    IMAGE,
    LABEL_NODE,
    NODE_PREFIX,
    PodmanHost,
    free_port,
    joined_edge_modules,
    run_kubectl,
    start_kernel,
)


async def test_deployment_runs_on_podman_and_survives_an_edge_restart_with_the_cloud_down(
    podman_host: PodmanHost, tmp_path: Path, nursery: trio.Nursery
) -> None:
    cloud_dir, edge_dir, home = tmp_path / "cloud", tmp_path / "edge", tmp_path / "home"
    home.mkdir()
    node = f"{NODE_PREFIX}{uuid.uuid4().hex[:6]}"
    sockets = Path(tempfile.mkdtemp(prefix="ke-", dir="/tmp"))
    api_port, hub_port, https_port = free_port(), free_port(), free_port()  # fixed: the cloud comes back on them
    cloud_profile = {
        "role": "cloud",
        "node": {"name": "cloud"},
        "modules": {
            "apiserver": {"port": api_port},
            "cloudhub": {"address": "127.0.0.1", "port": hub_port, "httpsPort": https_port, "keepaliveInterval": 5},
            "edgecontroller": {},
        },
    }
    cloud = await start_kernel(nursery, cloud_profile, cloud_dir, [])
    edge_profile = {
        "role": "edge",
        "node": {"name": node},
        "modules": joined_edge_modules(cloud.module("cloudhub"), cloud_dir, sockets),
    }
    edge = await start_kernel(nursery, edge_profile, edge_dir, [])
    kubeconfig = str(cloud.module("apiserver").kubeconfig_path)

    async def kubectl(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return await run_kubectl(kubeconfig, home, *args, stdin=stdin)

    async def running_pods() -> dict[str, str]:
        """name -> uid of the Deployment's pods that the API shows Running on the edge."""
        result = await kubectl("get", "pods", "-l", "app=web", "-o", "json")
        if result.returncode != 0:
            return {}
        items = json.loads(result.stdout)["items"]
        return {
            p["metadata"]["name"]: p["metadata"]["uid"]
            for p in items
            if p.get("status", {}).get("phase") == "Running" and p["spec"].get("nodeName") == node
        }

    def containers() -> set[str]:
        out = podman_host.podman(
            "ps",
            "--filter",
            f"label={LABEL_NODE}={node}",
            "--filter",
            "label=io.kubernetes.container.name=web",
            "--format",
            "json",
        ).stdout
        return {c["Id"] for c in json.loads(out or "[]") if c.get("State") == "running"}

    async def wait(what: str, check: Any, timeout: float = 60) -> Any:  # noqa: ASYNC109
        with trio.move_on_after(timeout):
            # kubectl's view and podman's are other processes' state: nothing to await but a fresh look.
            while not (value := await check()):  # noqa: ASYNC110
                await trio.sleep(0.2)
            return value
        raise AssertionError(f"timed out waiting for {what}")

    async def two_running() -> dict[str, str] | None:
        pods = await running_pods()
        return pods if len(pods) == 2 else None

    async def two_containers() -> set[str] | None:
        found = await trio.to_thread.run_sync(containers)
        return found if len(found) == 2 else None

    try:
        deployment = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      nodeSelector: {{node-role.kubernetes.io/edge: ""}}
      terminationGracePeriodSeconds: 0
      containers:
      - name: web
        image: {IMAGE}
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "echo serving; sleep 3600"]
"""
        applied = await kubectl("apply", "-f", "-", stdin=deployment.encode())
        assert applied.returncode == 0, applied.stderr.decode()
        pods = await wait("two Running pods in kubectl get pods", two_running)
        table = (await kubectl("get", "pods", "-o", "wide")).stdout.decode()
        assert table.count("Running") == 2 and node in table
        before = await wait("two running containers in podman", two_containers)

        # The cloud goes down, then the edge restarts (a reboot while offline): the pods come back from the
        # edge's own store, and the containers that still run are kept, not recreated.
        await cloud.stop()
        await edge.stop()
        edge = await start_kernel(nursery, edge_profile, edge_dir, [])
        after_restart = await wait("the containers after the edge restart", two_containers)
        assert after_restart == before

        # The cloud returns: the same pods (same uids) are Running; nothing was deleted and recreated.
        cloud = await start_kernel(nursery, cloud_profile, cloud_dir, [])
        kubeconfig = str(cloud.module("apiserver").kubeconfig_path)
        again = await wait("the same pods Running once the cloud is back", two_running)
        assert again == pods
        assert await trio.to_thread.run_sync(containers) == before
    finally:
        await edge.stop()
        await cloud.stop()
        await trio.to_thread.run_sync(podman_host.remove_node, node)
        shutil.rmtree(sockets, ignore_errors=True)

"""The whole way, as a user has it: the embedded cloud (apiserver, cloudhub, edgecontroller, cloudstream) and an
edge joined with a token (edgehub bootstraps the node certificate that edgestream then uses; metamanager,
edged on podman). kubectl creates a pod for the edge, waits for it to be Ready, and reads its logs and execs
in it through the tunnel."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import trio

from .conftest import IMAGE, NODE_PREFIX, PodmanHost, joined_edge_modules, run_kubectl, start_kernel


async def test_kubectl_logs_and_exec_on_a_joined_edge(
    podman_host: PodmanHost, tmp_path: Path, nursery: trio.Nursery
) -> None:
    cloud_dir, edge_dir, home = tmp_path / "cloud", tmp_path / "edge", tmp_path / "home"
    home.mkdir()
    node = f"{NODE_PREFIX}{uuid.uuid4().hex[:6]}"
    sockets = Path(tempfile.mkdtemp(prefix="ke-", dir="/tmp"))
    cloud = await start_kernel(
        nursery,
        {
            "role": "cloud",
            "node": {"name": "cloud"},
            "modules": {
                "apiserver": {"port": 0},
                "cloudhub": {"address": "127.0.0.1", "port": 0, "httpsPort": 0, "keepaliveInterval": 5},
                "edgecontroller": {},
                "cloudstream": {"address": "127.0.0.1", "tunnelPort": 0, "streamPort": 0},
            },
        },
        cloud_dir,
        [],
    )
    hub, stream = cloud.module("cloudhub"), cloud.module("cloudstream")
    edge = await start_kernel(
        nursery,
        {
            "role": "edge",
            "node": {"name": node},
            "modules": {
                **joined_edge_modules(hub, cloud_dir, sockets),
                "edgestream": {
                    "server": f"127.0.0.1:{stream.tunnel_port}",
                    "backoff": {"initialSeconds": 0.1, "maxSeconds": 0.5},
                },
            },
        },
        edge_dir,
        [],
    )
    kubeconfig = str(cloud.module("apiserver").kubeconfig_path)

    async def kubectl(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return await run_kubectl(kubeconfig, home, *args, stdin=stdin)

    try:
        with trio.fail_after(30):  # the node certificate comes from edgehub's bootstrap; edgestream waits for it
            await stream.tunnels.wait_connected(node)
        pod = f"""
apiVersion: v1
kind: Pod
metadata: {{name: hello}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 0
  containers:
  - name: main
    image: {IMAGE}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo hello from the edge; sleep 3600"]
"""
        result = await kubectl("apply", "--validate=false", "-f", "-", stdin=pod.encode())
        assert result.returncode == 0, result.stderr.decode()
        result = await kubectl("wait", "--for=condition=Ready", "pod/hello", "--timeout=60s")
        assert result.returncode == 0, result.stderr.decode()

        result = await kubectl("logs", "hello")
        assert result.stdout == b"hello from the edge\n", result.stderr.decode()
        result = await kubectl("exec", "hello", "--", "sh", "-c", "echo hi; exit 3")
        assert result.returncode == 3 and result.stdout == b"hi\n", result.stderr.decode()
        result = await kubectl("exec", "-i", "hello", "--", "cat", stdin=b"through cloudhub's certificate\n")
        assert result.stdout == b"through cloudhub's certificate\n", result.stderr.decode()
    finally:
        await edge.stop()
        await cloud.stop()
        await trio.to_thread.run_sync(podman_host.remove_node, node)
        shutil.rmtree(sockets, ignore_errors=True)

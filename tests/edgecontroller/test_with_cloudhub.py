"""The whole cloud with no Kubernetes anywhere: apiserver + cloudhub + edgecontroller + devicecontroller, and an
edge (edgehub + metamanager) joined over mutual TLS. kubectl applies a Deployment and a Device; the pod reaches
the edge's metamanager (and edged), the Device reaches the edge's twin module as membership."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import trio
from apiserver.helpers import DEVICE_MODEL, Cloud, RecordingHub, device, manifest

from kubeedge import Kernel, Message, Plugins
from kubeedge.plugins.apiserver.server import ApiServer
from kubeedge.plugins.cloudhub.hub import CloudHub
from kubeedge.plugins.common import pki
from kubeedge.plugins.devicecontroller.controller import DeviceController
from kubeedge.plugins.edgecontroller.controller import EdgeController
from kubeedge.plugins.edgehub.hub import EdgeHub
from kubeedge.plugins.metamanager.manager import MetaManager
from kubeedge.profile import build_profile

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "nodeSelector": {"node-role.kubernetes.io/edge": ""},
                "containers": [{"name": "web", "image": "busybox"}],
            },
        },
    },
}


async def test_kubectl_deployment_and_device_reach_a_joined_edge(tmp_path: Path) -> None:
    cloud_dir, edge_dir = tmp_path / "cloud", tmp_path / "edge"
    api = ApiServer({"port": 0})
    hub = CloudHub({"address": "127.0.0.1", "port": 0, "httpsPort": 0, "retryInterval": 0.5, "keepaliveInterval": 5})
    cloud_modules = [api, hub, EdgeController({}), DeviceController({})]
    cloud_kernel = Kernel(build_profile({"role": "cloud", "modules": {}}, data_dir=cloud_dir), Plugins(), cloud_modules)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(cloud_kernel.run, handle_signals=False))
        cloud = Cloud(cloud_kernel, api, cloud_dir, cloud_dir / "kubectl-cache")
        token = pki.make_token(pki.CA.load(cloud_dir / "pki"))
        edged, twin = RecordingHub("edged"), RecordingHub("twin")
        edge_hub = EdgeHub(
            {
                "server": f"127.0.0.1:{hub.port}",
                "httpServer": f"https://127.0.0.1:{hub.https_port}",
                "token": token,
                "heartbeat": 1,
                "reconnectMin": 0.05,
                "reconnectMax": 0.5,
                "connectTimeout": 3,
            }
        )
        meta = MetaManager({"metaSyncInterval": 3600})
        edge_profile = build_profile({"role": "edge", "node": {"name": "edge-1"}, "modules": {}}, data_dir=edge_dir)
        edge_kernel = Kernel(edge_profile, Plugins(), [meta, edge_hub, edged, twin])
        await nursery.start(partial(edge_kernel.run, handle_signals=False))

        def ready() -> bool:
            for node in cloud.objects("/nodes"):
                for condition in (node.get("status") or {}).get("conditions") or []:
                    if condition["type"] == "Ready" and condition["status"] == "True":
                        return True
            return False

        await cloud.wait_for(ready, timeout=15)
        nodes = (await cloud.kubectl("get", "nodes")).stdout.decode()
        assert "edge-1" in nodes and "Ready" in nodes and "agent,edge" in nodes

        await cloud.kubectl("apply", "-f", "-", stdin=manifest(DEPLOYMENT, DEVICE_MODEL, device()))
        pod_at_edge = await edged.wait_for(lambda m: m.resource.startswith("default/pod/web-"), timeout=15)
        assert pod_at_edge.content["spec"]["nodeName"] == "edge-1"
        name = pod_at_edge.content["metadata"]["name"]

        model = meta.model

        def stored() -> dict[str, Any]:
            rows = model.select().where(model.deleted == False)  # noqa: E712
            return {row.key: json.loads(row.value) for row in rows}

        persisted = await edge_kernel.ctx.database().run(stored)
        assert any(key.endswith(f"pod/{name}") for key in persisted), sorted(persisted)

        membership = await twin.wait_for(lambda m: m.resource == "membership", timeout=15)
        added = membership.content["added_devices"][0]
        assert added["id"] == "default/thermo-1" and added["twin"]["setpoint"]["expected"]["value"] == "20"

        # Reported values from the edge come back into Device.status through cloudhub.
        await edge_hub_send(edge_kernel, twin_update())

        def reported() -> bool:
            for obj in cloud.objects("devices.kubeedge.io/devices", "default"):
                for entry in (obj.get("status") or {}).get("twins") or []:
                    if entry["propertyName"] == "temperature":
                        return entry["reported"]["value"] == "22"
            return False

        await cloud.wait_for(reported, timeout=15)
        edge_kernel.stop()
        cloud_kernel.stop()


def twin_update() -> Message:
    return Message(
        source="twin",
        group="twin",
        operation="update",
        resource="device/default/thermo-1/twin/edge_updated",
        content={
            "event_id": "e1",
            "timestamp": 1700000000000,
            "twin": {
                "temperature": {
                    "actual": {"value": "22", "metadata": {"timestamp": 1700000000000}},
                    "metadata": {"type": "int"},
                }
            },
        },
    )


async def edge_hub_send(kernel: Kernel, message: Message) -> None:
    await kernel.bus.send("websocket", message)

"""Rules from the embedded apiserver: applied with kubectl, watched by the router, status written back."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio
from apiserver.helpers import RecordingHub, manifest, running_cloud

from kubeedge.plugins.router.module import Router

RULES = "rules.kubeedge.io/rules"


def endpoint(name: str, kind: str) -> dict[str, object]:
    return {
        "apiVersion": "rules.kubeedge.io/v1",
        "kind": "RuleEndpoint",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ruleEndpointType": kind, "properties": {}},
    }


RULE = {
    "apiVersion": "rules.kubeedge.io/v1",
    "kind": "Rule",
    "metadata": {"name": "rest-to-bus", "namespace": "default"},
    "spec": {
        "source": "my-rest",
        "sourceResource": {"path": "/cmd"},
        "target": "my-bus",
        "targetResource": {"topic": "app/cmd"},
    },
}


async def test_rules_come_from_the_api_and_status_goes_back(tmp_path: Path) -> None:
    hub = RecordingHub()
    router = Router({"rulesFrom": "api", "address": "127.0.0.1", "port": 0, "statusInterval": 0.05})
    async with running_cloud(tmp_path, [hub, router]) as cloud, httpx.AsyncClient() as client:
        await cloud.kubectl(
            "apply", "-f", "-", stdin=manifest(endpoint("my-rest", "rest"), endpoint("my-bus", "eventbus"), RULE)
        )
        with trio.fail_after(10):
            while not router.source.rules():
                await router.source.changed.wait()
        response = await client.post(f"http://127.0.0.1:{router.port}/edge-1/default/cmd", content=b"on")
        assert response.status_code == 200, response.text
        sent = await hub.wait_for(lambda m: m.resource == "node/edge-1/app/cmd")
        assert (sent.source, sent.operation, sent.content) == ("router_eventbus", "publish", "on")

        def status() -> dict[str, object]:
            for obj in cloud.objects(RULES, "default"):
                if obj["metadata"]["name"] == "rest-to-bus":
                    return dict(obj.get("status") or {})
            return {}

        await cloud.wait_for(lambda: status().get("successMessages") == 1)
        assert status()["failMessages"] == 0

        # A rule deleted in the API stops routing.
        await cloud.kubectl("delete", "rule", "rest-to-bus")
        with trio.fail_after(10):
            while router.source.rules():
                await router.source.changed.wait()
        gone = await client.post(f"http://127.0.0.1:{router.port}/edge-1/default/cmd", content=b"on")
        assert gone.status_code == 404

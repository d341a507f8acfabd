"""Rules end to end: a cloud (cloudhub + router) and an edge (edgehub + eventbus + twin + servicebus) joined
over the real mTLS link, real HTTP servers on loopback, a paho client as the edge app."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from eventbus.edge_peers import mapper

from kubeedge import Kernel, Message, Plugins
from kubeedge.plugins.common import pki
from kubeedge.plugins.router.module import MAX_MESSAGE_BYTES, Router
from kubeedge.plugins.router.rules import ConfigRuleSource, path_matches, topic_matches
from kubeedge.profile import build_profile

NODE = "edge-1"


# -- rules, without I/O -------------------------------------------------------------------------------


def test_path_and_topic_matching() -> None:
    assert path_matches("/a/{id}/b", "/a/42/b")
    assert not path_matches("/a/{id}/b", "/a/42/c")
    assert path_matches("/cmd", "/cmd/")
    assert not path_matches("/cmd", "/cmd/x")
    assert topic_matches("default/+/data", "default/t1/data")
    assert topic_matches("default/#", "default/a/b")
    assert not topic_matches("default/t", "default/t/x")


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"rules": [{"metadata": {"name": "r"}, "spec": {"source": "a", "target": "b"}}]}, "no RuleEndpoint"),
        ({"ruleEndpoints": [{"metadata": {"name": "e"}, "spec": {"ruleEndpointType": "ftp"}}]}, "ruleEndpointType"),
        ({"ruleEndpoints": [{"metadata": {"name": "e"}, "spec": {"ruleEndpointType": "servicebus"}}]}, "service_port"),
        ({"rules": [{"metadata": {}, "spec": {}}]}, "metadata.name"),
    ],
)
def test_bad_rules_are_refused_with_their_name(config: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        ConfigRuleSource(config)


# -- end to end ---------------------------------------------------------------------------------------


@dataclass
class HttpApp:
    """A real HTTP server on loopback; records requests and answers with ``respond``."""

    respond: Callable[[str, str, bytes], Awaitable[tuple[int, bytes]]]
    requests: list[tuple[str, str, bytes]] = field(default_factory=list)
    port: int = 0
    changed: trio.Event = field(default_factory=trio.Event)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        self.requests.append((scope["method"], scope["path"], body))
        self.changed.set()
        self.changed = trio.Event()
        status, answer = await self.respond(scope["method"], scope["path"], body)
        await send({"type": "http.response.start", "status": status, "headers": [(b"x-app", b"yes")]})
        await send({"type": "http.response.body", "body": answer})

    async def wait_requests(self, count: int) -> None:
        with trio.fail_after(10):
            while len(self.requests) < count:
                await self.changed.wait()


async def serve_app(nursery: trio.Nursery, app: HttpApp) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    handler: Any = app
    binds = await nursery.start(partial(serve, handler, config, mode="asgi"))
    app.port = int(binds[0].rsplit(":", 1)[1])


def endpoint(name: str, kind: str, **properties: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ruleEndpointType": kind, "properties": properties},
    }


def rule(name: str, source: str, source_resource: dict[str, str], target: str, target_resource: dict[str, str]) -> Any:
    return {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "source": source,
            "sourceResource": source_resource,
            "target": target,
            "targetResource": target_resource,
        },
    }


@dataclass
class World:
    router: Router
    edge_kernel: Kernel
    eventbus: Any
    servicebus: Any
    edge_app: HttpApp
    cloud_app: HttpApp

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.router.port}"


@asynccontextmanager
async def world(tmp_path: Path) -> AsyncIterator[World]:
    from kubeedge.plugins.cloudhub.hub import CloudHub
    from kubeedge.plugins.edgehub.hub import EdgeHub
    from kubeedge.plugins.eventbus.module import EventBus
    from kubeedge.plugins.servicebus.module import ServiceBus

    async def edge_answer(method: str, path: str, body: bytes) -> tuple[int, bytes]:
        return (201, b"hello " + body) if path == "/hello" else (404, b"nothing here")

    async def cloud_answer(method: str, path: str, body: bytes) -> tuple[int, bytes]:
        return (500, b"broken") if path == "/broken" else (200, b"cloud got " + body)

    edge_app, cloud_app = HttpApp(edge_answer), HttpApp(cloud_answer)
    async with trio.open_nursery() as nursery:
        await serve_app(nursery, edge_app)
        await serve_app(nursery, cloud_app)
        sink = f"http://127.0.0.1:{cloud_app.port}"
        router_config = {
            "address": "127.0.0.1",
            "port": 0,
            "resyncInterval": 0.2,
            "restTimeout": 10,
            "ruleEndpoints": [
                endpoint("rest", "rest"),
                endpoint("bus", "eventbus"),
                endpoint("svc", "servicebus", service_port=str(edge_app.port)),
                endpoint("dead-svc", "servicebus", service_port="1"),
            ],
            "rules": [
                rule("rest-to-bus", "rest", {"path": "/cmd"}, "bus", {"topic": "app/cmd"}),
                rule(
                    "bus-to-rest",
                    "bus",
                    {"topic": "default/telemetry", "node_name": NODE},
                    "rest",
                    {"resource": f"{sink}/ingest"},
                ),
                rule(
                    "bus-to-broken",
                    "bus",
                    {"topic": "default/bad", "node_name": NODE},
                    "rest",
                    {"resource": f"{sink}/broken"},
                ),
                rule("rest-to-svc", "rest", {"path": "/svc/{name}"}, "svc", {"path": "/hello"}),
                rule("rest-to-dead", "rest", {"path": "/dead"}, "dead-svc", {"path": "/x"}),
                rule("svc-to-rest", "svc", {"path": "/up"}, "rest", {"resource": f"{sink}/from-edge"}),
            ],
        }
        hub = CloudHub({"address": "127.0.0.1", "port": 0, "httpsPort": 0, "keepaliveInterval": 5})
        router = Router(router_config)
        cloud = Kernel(
            build_profile({"role": "cloud", "modules": {}}, data_dir=tmp_path / "cloud"), Plugins(), [hub, router]
        )
        await nursery.start(partial(cloud.run, handle_signals=False))
        assert hub.ca is not None
        edgehub = EdgeHub(
            {
                "server": f"127.0.0.1:{hub.port}",
                "httpServer": f"https://127.0.0.1:{hub.https_port}",
                "token": pki.make_token(hub.ca),
                "heartbeat": 1,
                "reconnectMin": 0.05,
                "reconnectMax": 0.5,
            }
        )
        eventbus = EventBus({"mqttMode": 0, "mqttServerInternal": "tcp://127.0.0.1:0"})
        servicebus = ServiceBus({"port": 0, "timeout": 10})
        edge_profile = build_profile(
            {"role": "edge", "node": {"name": NODE}, "modules": {}}, data_dir=tmp_path / "edge"
        )
        edge = Kernel(edge_profile, Plugins(), [edgehub, eventbus, servicebus])
        await nursery.start(partial(edge.run, handle_signals=False))
        with trio.fail_after(15):
            await edgehub.connected.wait()
        try:
            yield World(router, edge, eventbus, servicebus, edge_app, cloud_app)
        finally:
            edge.stop()
            cloud.stop()
            nursery.cancel_scope.cancel()


async def test_rest_to_eventbus(tmp_path: Path) -> None:
    async with world(tmp_path) as w, mapper(w.eventbus.internal_port, "app/#") as app:
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{w.rest}/{NODE}/default/cmd", content=b'{"switch":"on"}')
            assert response.status_code == 200, response.text
            assert await app.expect("app/cmd") == b'{"switch":"on"}'
            missing = await client.post(f"{w.rest}/{NODE}/default/nowhere", content=b"x")
            assert missing.status_code == 404
            assert (await client.post(f"{w.rest}/only-node", content=b"x")).status_code == 404
        assert w.router.status["default/rest-to-bus"].to_dict() == {
            "successMessages": 1,
            "failMessages": 0,
            "errors": [],
        }


async def test_eventbus_to_rest(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        with trio.fail_after(10):
            while "default/telemetry" not in w.eventbus.filters:
                await w.eventbus.filters_changed.wait()
        async with mapper(w.eventbus.internal_port) as app:
            await app.publish("default/telemetry", '{"t":21.5}')
            await w.cloud_app.wait_requests(1)
            assert w.cloud_app.requests[0] == ("POST", "/ingest", b'{"t":21.5}')
            await app.publish("default/bad", "x")
            await w.cloud_app.wait_requests(2)
        with trio.fail_after(10):
            while not {"default/bus-to-broken", "default/bus-to-rest"} <= set(w.router.status):
                await w.router.status_changed.wait()
        assert w.router.status["default/bus-to-rest"].success_messages == 1
        broken = w.router.status["default/bus-to-broken"]
        assert broken.fail_messages == 1 and "500" in broken.errors[0]


async def test_rest_to_servicebus_and_back(tmp_path: Path) -> None:
    async with world(tmp_path) as w, httpx.AsyncClient(timeout=20) as client:
        response = await client.put(f"{w.rest}/{NODE}/default/svc/anything?q=1", content=b"edge")
        assert (response.status_code, response.content) == (201, b"hello edge")
        assert response.headers["x-app"] == "yes"
        assert w.edge_app.requests[-1] == ("PUT", "/hello", b"edge")
        dead = await client.post(f"{w.rest}/{NODE}/default/dead", content=b"x")
        assert dead.status_code == 502
        assert w.router.status["default/rest-to-svc"].success_messages == 1
        assert w.router.status["default/rest-to-dead"].fail_messages == 1


async def test_servicebus_to_rest(tmp_path: Path) -> None:
    async with world(tmp_path) as w, httpx.AsyncClient(timeout=20) as client:
        response = await client.post(f"http://127.0.0.1:{w.servicebus.port}/up", content=b"from an edge app")
        assert (response.status_code, response.content) == (200, b"cloud got from an edge app")
        assert w.cloud_app.requests[-1] == ("POST", "/from-edge", b"from an edge app")
        refused = await client.get(f"http://127.0.0.1:{w.servicebus.port}/not-allowed")
        assert refused.status_code == 404
        assert not [r for r in w.cloud_app.requests if r[1] != "/from-edge"]


async def test_bodies_over_12_mib_get_413(tmp_path: Path) -> None:
    big = b"x" * (MAX_MESSAGE_BYTES + 1)
    async with world(tmp_path) as w, httpx.AsyncClient(timeout=20) as client:
        assert (await client.post(f"{w.rest}/{NODE}/default/cmd", content=big)).status_code == 413
        assert (await client.post(f"http://127.0.0.1:{w.servicebus.port}/up", content=big)).status_code == 413
        # Exactly at the limit is accepted by the REST ingress.
        ok = await client.post(f"{w.rest}/{NODE}/default/cmd", content=b"y" * 1024)
        assert ok.status_code == 200


async def test_cloud_sends_user_messages_through_the_link(tmp_path: Path) -> None:
    """The eventbus takes the router's subscribe requests from the cloud (and ignores junk)."""
    async with world(tmp_path) as w:
        ctx = w.edge_kernel.ctx
        await ctx.send("eventbus", Message(source="router_eventbus", group="user", operation="dance", resource="x"))
        reply = await ctx.send_sync(
            "eventbus",
            Message(source="router_eventbus", group="user", operation="subscribe", resource="a/#/b"),
            timeout=5,
        )
        assert reply.operation == "error"
        assert json.dumps(reply.content)

"""The servicebus alone on an edge bus: requests from the cloud to a real app on loopback, and apps' requests
to the cloud, with a stand-in for edgehub that plays the cloud router."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio
from eventbus.edge_peers import CloudStub, free_port

from kubeedge import Kernel, Message, Plugins
from kubeedge.plugins.servicebus.module import ServiceBus
from kubeedge.profile import build_profile


@asynccontextmanager
async def edge(tmp_path: Path, *, link: bool = True) -> AsyncIterator[tuple[Kernel, ServiceBus, CloudStub]]:
    servicebus = ServiceBus({"port": 0, "timeout": 5})
    stub = CloudStub()
    modules: list[Any] = [servicebus, stub] if link else [servicebus]
    profile = build_profile({"role": "edge", "node": {"name": "edge-1"}, "modules": {}}, data_dir=tmp_path)
    kernel = Kernel(profile, Plugins(), modules)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(kernel.run, handle_signals=False))
        try:
            yield kernel, servicebus, stub
        finally:
            kernel.stop()


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            done = "startup" if event["type"] == "lifespan.startup" else "shutdown"
            await send({"type": f"lifespan.{done}.complete"})
            if done == "shutdown":
                return
    body = (await receive()).get("body", b"")
    await send({"type": "http.response.start", "status": 202, "headers": [(b"x-echo", b"1")]})
    await send(
        {"type": "http.response.body", "body": scope["method"].encode() + b" " + scope["path"].encode() + b" " + body}
    )


async def test_cloud_request_reaches_the_app_and_the_answer_goes_up(tmp_path: Path) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    async with trio.open_nursery() as nursery, edge(tmp_path) as (kernel, _servicebus, stub):
        app: Any = echo_app
        binds = await nursery.start(partial(serve, app, config, mode="asgi"))
        port = int(binds[0].rsplit(":", 1)[1])
        request = Message(
            source="router_servicebus",
            group="user",
            operation="query",
            resource="default/hello",
            content={
                "method": "POST",
                "port": port,
                "path": "/hello?x=1",
                "header": {},
                "body": base64.b64encode(b"hi").decode(),
            },
        )
        await kernel.ctx.send("servicebus", request)
        reply = await stub.expect(lambda m: m.parent_msg_id == request.msg_id)
        assert (reply.source, reply.group, reply.operation) == ("servicebus", "user", "response")
        assert reply.content["code"] == 202
        assert base64.b64decode(reply.content["body"]) == b"POST /hello hi"
        assert reply.content["header"]["x-echo"] == "1"

        for content, code in (({"port": 0, "path": "/x"}, 400), ({"port": free_port(), "path": "/x"}, 502)):
            bad = Message(source="router_servicebus", group="user", operation="query", resource="r", content=content)
            await kernel.ctx.send("servicebus", bad)
            answer = await stub.expect(partial(answers, bad))
            assert answer.content["code"] == code
        nursery.cancel_scope.cancel()


def answers(request: Message, message: Message) -> bool:
    return message.parent_msg_id == request.msg_id


async def test_app_request_without_a_link_gets_503(tmp_path: Path) -> None:
    async with edge(tmp_path, link=False) as (_kernel, servicebus, _stub), httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{servicebus.port}/anything")
        assert response.status_code == 503


async def test_app_request_goes_up_and_the_cloud_answer_comes_back(tmp_path: Path) -> None:
    async with edge(tmp_path) as (kernel, servicebus, stub), httpx.AsyncClient(timeout=10) as client:

        async def cloud() -> None:
            request = await stub.expect(lambda m: m.operation == "query")
            assert request.resource == "servicebus/api/v1"
            assert request.content["method"] == "PUT"
            assert base64.b64decode(request.content["body"]) == b"payload"
            answer = {"code": 200, "header": {"x-cloud": "yes"}, "body": base64.b64encode(b"done").decode()}
            kernel.ctx.send_resp(request.reply(answer, source="router_servicebus"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cloud)
            response = await client.put(f"http://127.0.0.1:{servicebus.port}/api/v1", content=b"payload")
        assert (response.status_code, response.content, response.headers["x-cloud"]) == (200, b"done", "yes")

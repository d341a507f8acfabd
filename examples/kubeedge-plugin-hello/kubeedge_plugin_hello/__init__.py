"""The ``hello`` module: a complete third-party kubeedge plugin in one file."""

from __future__ import annotations

import logging
from typing import Any

import trio

from kubeedge import BaseModule, Context, Message, hookimpl

log = logging.getLogger("kubeedge.hello")


class Hello(BaseModule):
    name = "hello"
    group = "hello"
    after = ("health",)  # start once health serves, so the first question gets an answer

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        greeting = self.config.get("greeting", "hello")
        report = await self.ask_health(ctx)
        log.info("%s from %s; health says modules %s", greeting, ctx.node_name, sorted(report["modules"]))
        task_status.started()
        async for message in ctx.bus.channel(self.name):
            if message.operation != "query":
                continue
            answer = {"greeting": greeting, "node": ctx.node_name, "health": await self.ask_health(ctx)}
            if message.sync:
                ctx.send_resp(message.reply(answer, source=self.name))

    async def ask_health(self, ctx: Context) -> dict[str, Any]:
        request = Message(source=self.name, group="health", operation="query", resource="node/health")
        reply = await ctx.send_sync("health", request, timeout=5)
        return dict(reply.content)


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {"greeting": {"type": "string", "minLength": 1}},
    }


@hookimpl
def kubeedge_module(config: dict[str, Any]) -> Hello:
    return Hello(config)

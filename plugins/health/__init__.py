"""The ``health`` module: answers queries about the node itself (its modules' states, uptime, queues).

Any module, or a plugin of a third party, can ask it over the bus::

    reply = await ctx.send_sync("health", Message(source="me", group="health", operation="query",
                                                  resource="node/health"))

``reply.content`` is ``{"node", "role", "uptime_s", "modules": {name: state}, "queues": {name: depth}}``.
Operation ``ping`` is answered with ``"pong"``; anything else gets an ``error`` reply naming it.
"""

from __future__ import annotations

from typing import Any

import trio

from kubeedge import BaseModule, Context, Message, hookimpl


class Health(BaseModule):
    name = "health"
    group = "health"

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        began = trio.current_time()
        task_status.started()
        async for message in ctx.bus.channel(self.name):
            if message.operation == "query":
                content: Any = {
                    "node": ctx.node_name,
                    "role": ctx.role,
                    "uptime_s": round(trio.current_time() - began, 3),
                    "modules": dict(ctx.states),
                    "queues": {name: ctx.bus.queue_depth(name) for name in ctx.bus.modules},
                }
                reply = message.reply(content, source=self.name)
            elif message.operation == "ping":
                reply = message.reply("pong", source=self.name)
            else:
                reply = message.reply(
                    f"health: unknown operation {message.operation!r}", operation="error", source=self.name
                )
            await self._answer(ctx, message, reply)

    @staticmethod
    async def _answer(ctx: Context, request: Message, reply: Message) -> None:
        if request.sync:
            ctx.send_resp(reply)
        elif request.source and ctx.bus.has_module(request.source):
            await ctx.send(request.source, reply)


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": {}}


@hookimpl
def kubeedge_module(config: dict[str, Any]) -> Health:
    return Health(config)

"""metamanager: the edge's local metadata store.

Cloud writes (insert/update/delete from the cloud's controllers, delivered by edgehub) are applied in
batches, one transaction each; only after the commit is each one acknowledged to the cloud
(``operation: response``, ``parent_msg_id`` = its id, content ``"OK"``) and forwarded to edged
(pod/configmap/secret) or edgemesh (service/endpoints). A write never replaces a newer resourceVersion
with an older one; a delete leaves a tombstone holding its version so a late, older insert cannot bring
the object back. Edge modules' own reports (pod status, node status) are stored and uploaded.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import trio

from kubeedge import BaseModule, Context, Message

log = logging.getLogger("kubeedge.metamanager")

EDGE_SOURCES = frozenset(
    {"edged", "twin", "eventbus", "servicebus", "mappers", "edgemesh", "edgestream", "metamanager"}
)
WRITES = frozenset({"insert", "update", "delete", "patch"})
TO_EDGED = frozenset({"pod", "configmap", "secret"})
TO_EDGEMESH = frozenset({"service", "endpoints"})


def compare_versions(a: str, b: str) -> int:
    if a == b:
        return 0
    if a.isdigit() and b.isdigit():
        return (int(a) > int(b)) - (int(a) < int(b))
    return 1


def split_resource(resource: str) -> tuple[str, str, str]:
    """``<ns>/<type>[/<name>...]`` -> (namespace, type, name); name may contain '/'."""
    parts = resource.split("/", 2)
    while len(parts) < 3:
        parts.append("")
    return parts[0], parts[1], parts[2]


@dataclass(slots=True)
class Outcome:
    message: Message
    applied: bool


class MetaManager(BaseModule):
    name = "metamanager"
    group = "meta"

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.meta_sync_interval = float(self.config.get("metaSyncInterval", 60))
        self.batch = int(self.config.get("batch", 256))
        self.cloud_connected = False
        self.model: Any = None
        self.written = 0
        self.committed = trio.Event()  # set after each committed batch (tests wait on it)

    # -- storage ---------------------------------------------------------------------------------------

    def _bind(self, ctx: Context) -> None:
        import peewee

        class Meta(peewee.Model):
            key = peewee.CharField(primary_key=True)
            type = peewee.CharField(index=True)
            namespace = peewee.CharField()
            name = peewee.CharField()
            resource_version = peewee.CharField(default="")
            value = peewee.TextField(null=True)
            deleted = peewee.BooleanField(default=False)

            class Meta:
                table_name = "meta"

        ctx.database().bind([Meta])
        self.model = Meta

    def _apply(self, messages: list[Message]) -> list[Outcome]:
        """Apply writes in one transaction (runs on the database thread)."""
        model = self.model
        keys = list({m.resource for m in messages})
        rows = {row.key: row for row in model.select().where(model.key.in_(keys))}
        outcomes: list[Outcome] = []
        for message in messages:
            key = message.resource
            namespace, kind, name = split_resource(key)
            row = rows.get(key)
            version = message.resource_version
            if row is not None and version and row.resource_version:
                order = compare_versions(version, row.resource_version)
                duplicate = order == 0 and (message.operation == "delete") == row.deleted
                if order < 0 or duplicate:  # older, or a resend of what is stored: ACK it, change nothing
                    outcomes.append(Outcome(message, False))
                    continue
            if row is None:
                row = model(key=key, type=kind, namespace=namespace, name=name)
                rows[key] = row
                created = True
            else:
                created = False
            if message.operation == "delete":
                row.deleted = True
                row.value = None
            else:
                row.deleted = False
                content = message.content
                if message.operation == "patch" and isinstance(content, dict) and row.value:
                    merged = json.loads(row.value)
                    if isinstance(merged, dict):
                        merged.update(content)
                        content = merged
                row.value = json.dumps(content, separators=(",", ":"))
            if version:
                row.resource_version = version
            row.save(force_insert=created)
            outcomes.append(Outcome(message, True))
        return outcomes

    def _query(self, resource: str) -> Any:
        model = self.model
        namespace, kind, name = split_resource(resource)
        if name:
            row = model.get_or_none((model.key == resource) & (model.deleted == False))  # noqa: E712
            return json.loads(row.value) if row is not None and row.value else None
        query = model.select().where((model.type == kind) & (model.deleted == False))  # noqa: E712
        if namespace and namespace != "*":
            query = query.where(model.namespace == namespace)
        return [json.loads(row.value) for row in query.order_by(model.key) if row.value]

    def _pod_statuses(self) -> list[tuple[str, Any]]:
        model = self.model
        rows = model.select().where((model.type == "podstatus") & (model.deleted == False))  # noqa: E712
        return [(row.key, json.loads(row.value)) for row in rows if row.value]

    # -- running ---------------------------------------------------------------------------------------

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.to_thread.run_sync(self._bind, ctx)
        channel = ctx.bus.channel(self.name)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._meta_sync, ctx)
            task_status.started()
            while True:
                batch = [await channel.receive()]
                while len(batch) < self.batch:
                    try:
                        batch.append(channel.receive_nowait())
                    except trio.WouldBlock:
                        break
                await self._handle_batch(ctx, batch)

    async def _handle_batch(self, ctx: Context, batch: list[Message]) -> None:
        writes: list[Message] = []
        for message in batch:
            op = message.operation
            if op in WRITES and message.resource:
                writes.append(message)
                continue
            if writes:  # keep order: a query sees every write queued before it
                await self._write(ctx, writes)
                writes = []
            await self._other(ctx, message)
        if writes:
            await self._write(ctx, writes)

    async def _write(self, ctx: Context, writes: list[Message]) -> None:
        try:
            outcomes = await ctx.database().run(self._apply, writes)
        except Exception as exc:  # a database error: no ACK, the cloud resends
            log.error("metamanager: writing %d messages failed (%s); not acknowledged", len(writes), exc)
            return
        self.written += len(outcomes)
        self.committed.set()
        self.committed = trio.Event()
        for outcome in outcomes:
            message = outcome.message
            from_edge = message.source in EDGE_SOURCES
            if not outcome.applied:
                log.debug(
                    "metamanager: kept the newer version of %s (got %s)", message.resource, message.resource_version
                )
            if from_edge:
                if message.sync:
                    ctx.send_resp(message.reply("OK", source=self.name))
                await self._upload(ctx, message)
                continue
            if ctx.bus.has_module("websocket"):
                await ctx.send(
                    "websocket",
                    Message(
                        source=self.name,
                        group="resource",
                        operation="response",
                        parent_msg_id=message.msg_id,
                        resource=message.resource,
                        content="OK",
                    ),
                )
            if outcome.applied:
                await self._forward(ctx, message)

    async def _forward(self, ctx: Context, message: Message) -> None:
        kind = split_resource(message.resource)[1]
        target = "edged" if kind in TO_EDGED else "edgemesh" if kind in TO_EDGEMESH else ""
        if target and ctx.bus.has_module(target):
            await ctx.send(target, message)
        if ctx.bus.has_module("metaserver"):  # its watches follow every stored change
            await ctx.send("metaserver", message)

    async def _upload(self, ctx: Context, message: Message) -> None:
        if ctx.bus.has_module("websocket"):
            up = Message(
                source=self.name,
                group=message.group if message.group not in ("meta", "") else "resource",
                operation=message.operation,
                resource=message.resource,
                content=message.content,
            )
            await ctx.send("websocket", up)

    async def _other(self, ctx: Context, message: Message) -> None:
        op = message.operation
        if op == "connect" and message.resource == "node/connection":
            self.cloud_connected = message.content == "cloud_connected"
            log.info("metamanager: %s", message.content)
            return
        if op == "query":
            try:
                content = await ctx.database().run(self._query, message.resource)
                reply = message.reply(content, source=self.name)
            except Exception as exc:
                reply = message.reply(f"query {message.resource} failed: {exc}", operation="error", source=self.name)
            if message.sync:
                ctx.send_resp(reply)
            elif message.source and ctx.bus.has_module(message.source):
                await ctx.send(message.source, reply)
            return
        if op == "response" and message.parent_msg_id and ctx.bus.is_awaited(message.parent_msg_id):
            ctx.send_resp(message)
            return
        log.debug("metamanager: ignored %s %s from %s", op, message.resource, message.source)

    async def _meta_sync(self, ctx: Context) -> None:
        """Re-upload pod statuses every ``metaSyncInterval`` (KubeEdge's MetaSync)."""
        while True:
            await trio.sleep(self.meta_sync_interval)
            if not self.cloud_connected or not ctx.bus.has_module("websocket"):
                continue
            for key, value in await ctx.database().run(self._pod_statuses):
                await ctx.send(
                    "websocket",
                    Message(source=self.name, group="resource", operation="update", resource=key, content=value),
                )

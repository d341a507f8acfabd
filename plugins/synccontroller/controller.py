"""synccontroller: reconcile acknowledged versions (ObjectSync records) with the current objects.

KubeEdge's rules (``cloud/pkg/synccontroller``): the object is gone, or its uid differs -> send a
``delete``; its resourceVersion is newer than the record's -> send an ``update``. Objects that have no
record yet and are not queued any more (cloudhub gave up after its last resend) are sent again too.

Where current objects come from is an :class:`ObjectSource`. :class:`FedSource` asks cloudhub what
controllers last fed it; it is partial (empty after a cloud restart until controllers re-list), so it
never causes deletes. A Kubernetes-API source (``complete = True``) can replace it without touching the rest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from kubeedge import BaseModule, Context, Message

log = logging.getLogger("kubeedge.synccontroller")


def compare_versions(a: str, b: str) -> int:
    if a == b:
        return 0
    if a.isdigit() and b.isdigit():
        return (int(a) > int(b)) - (int(a) < int(b))
    return 1


@dataclass(slots=True)
class SourceObject:
    uid: str
    resource_version: str
    content: Any = None  # None: ask cloudhub to resend what it was fed
    queued: bool = False


class ObjectSource(Protocol):
    #: True when an object missing from :meth:`objects` is really gone (the API); False for partial
    #: views such as :class:`FedSource` after a cloud restart, where absence proves nothing.
    complete: bool

    async def objects(self, ctx: Context) -> dict[tuple[str, str], SourceObject]:
        """Current objects by (node, edge-side resource)."""
        ...


class FedSource:
    """The newest object each controller fed cloudhub, per node and resource (partial: see ``complete``)."""

    complete = False

    async def objects(self, ctx: Context) -> dict[tuple[str, str], SourceObject]:
        reply = await ctx.send_sync(
            "cloudhub", Message(source="synccontroller", group="resource", operation="query", resource="fedobjects"), 10
        )
        return {
            (item["node"], item["resource"]): SourceObject(item["uid"], item["resourceVersion"], None, item["queued"])
            for item in reply.content or []
        }


@dataclass
class Pass:
    deletes: int = 0
    updates: int = 0
    resends: int = 0


class SyncController(BaseModule):
    name = "synccontroller"
    group = "synccontroller"
    after = ("cloudhub",)

    def __init__(self, config: dict[str, Any] | None = None, source: ObjectSource | None = None) -> None:
        super().__init__(config)
        self.interval = float(self.config.get("interval", 5))
        self.source: ObjectSource = source or FedSource()
        self.passes = 0
        self.last = Pass()
        self.passed = trio.Event()

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._ignore_inbox, ctx)
            task_status.started()
            while True:
                await trio.sleep(self.interval)
                try:
                    self.last = await self.reconcile(ctx)
                except Exception as exc:  # one failed pass must not end the controller
                    log.warning("synccontroller: pass failed: %s: %s", type(exc).__name__, exc)
                self.passes += 1
                self.passed.set()
                self.passed = trio.Event()

    async def _ignore_inbox(self, ctx: Context) -> None:
        async for message in ctx.bus.channel(self.name):
            log.debug("synccontroller: ignored %s %s", message.operation, message.resource)

    async def reconcile(self, ctx: Context) -> Pass:
        result = Pass()
        reply = await ctx.send_sync(
            "cloudhub", Message(source=self.name, group="resource", operation="query", resource="objectsync"), 10
        )
        records = reply.content or []
        current = await self.source.objects(ctx)
        recorded: set[tuple[str, str]] = set()
        for record in records:
            node, resource = record["node"], record["resource"]
            recorded.add((node, resource))
            if record.get("queued"):
                continue  # cloudhub is still delivering this key
            obj = current.get((node, resource))
            if obj is None and not self.source.complete:
                continue
            if obj is None or obj.uid != record["uid"]:
                result.deletes += 1
                await ctx.send(
                    "cloudhub",
                    Message(
                        source=self.name,
                        group="resource",
                        operation="delete",
                        resource=f"node/{node}/{resource}",
                        content={
                            "kind": record["kind"],
                            "metadata": {
                                "name": record["object_name"],
                                "namespace": record["namespace"],
                                "uid": record["uid"],
                            },
                        },
                    ),
                )
            elif not obj.queued and compare_versions(obj.resource_version, record["resource_version"]) > 0:
                result.updates += 1
                await self._send(ctx, node, resource, obj)
        for (node, resource), obj in current.items():
            if (node, resource) not in recorded and not obj.queued:
                result.resends += 1
                await self._send(ctx, node, resource, obj)
        if result.deletes or result.updates or result.resends:
            log.info(
                "synccontroller: %d deletes, %d updates, %d resends of unacknowledged objects",
                result.deletes,
                result.updates,
                result.resends,
            )
        return result

    async def _send(self, ctx: Context, node: str, resource: str, obj: SourceObject) -> None:
        if obj.content is None:
            message = Message(
                source=self.name, group="resource", operation="resync", resource=f"node/{node}/{resource}"
            )
        else:
            message = Message(
                source=self.name,
                group="resource",
                operation="update",
                resource=f"node/{node}/{resource}",
                resource_version=obj.resource_version,
                content=obj.content,
            )
        await ctx.send("cloudhub", message)

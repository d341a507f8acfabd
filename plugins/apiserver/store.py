"""The object store behind the embedded API: every object in memory, every change persisted to SQLite.

One table holds the objects, keyed by storage key (group/plural, no version), namespace and name; one
table holds the event log that watches resume from. ``resourceVersion`` is one global counter, as etcd's
revision. Writes are group-committed: each writer updates memory at once (so conflicts are decided on
the trio thread, in order), then waits for the batch its change is in to be committed in one
transaction; watchers get the events only after that commit, in resourceVersion order.
"""

from __future__ import annotations

import builtins
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

__all__ = ["Event", "Gone", "Store", "Watcher"]

log = logging.getLogger("kubeedge.apiserver.store")

Predicate = Callable[[dict[str, Any]], bool]


class Gone(Exception):
    """The requested resourceVersion is older than the oldest event kept (HTTP 410)."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


@dataclass(slots=True)
class Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    key: str
    namespace: str
    name: str
    obj: dict[str, Any]
    old: dict[str, Any] | None = None
    # Watch lines already encoded for this event, by (type, apiVersion): a change is serialised once for all
    # the watchers that see it the same way.
    encoded: dict[tuple[str, str], bytes] = field(default_factory=dict)


@dataclass(slots=True)
class _Kept:
    """An event in the history kept for watches that resume: its objects as the JSON the database stores, a
    sixth of the memory of the dicts (a busy Device's status updates would otherwise hold hundreds of MB)."""

    rv: int
    type: str
    key: str
    namespace: str
    name: str
    data: str
    old: str | None

    def event(self) -> Event:
        old = json.loads(self.old) if self.old is not None else None
        return Event(self.rv, self.type, self.key, self.namespace, self.name, json.loads(self.data), old)


@dataclass(eq=False)
class Watcher:
    """One watch: which objects it wants, and the channel its events go to."""

    keys: frozenset[str] | None
    namespace: str | None
    start_rv: int
    send: trio.MemorySendChannel[Event]
    receive: trio.MemoryReceiveChannel[Event]
    predicates: list[Predicate] = field(default_factory=list)
    overflowed: bool = False

    def _matches(self, obj: dict[str, Any] | None) -> bool:
        return obj is not None and all(p(obj) for p in self.predicates)

    def translate(self, event: Event) -> Event | None:
        """The event as this watcher sees it: objects moving in or out of its selectors become ADDED/DELETED."""
        if event.rv <= self.start_rv:
            return None
        if self.keys is not None and event.key not in self.keys:
            return None
        if self.namespace is not None and event.namespace != self.namespace:
            return None
        if not self.predicates:
            return event
        now = self._matches(event.obj)
        if event.type == "DELETED":
            return event if now else None
        before = self._matches(event.old)
        if now and before:
            return event
        if now:
            return Event(event.rv, "ADDED", event.key, event.namespace, event.name, event.obj, event.old)
        if before:
            return Event(event.rv, "DELETED", event.key, event.namespace, event.name, event.obj, event.old)
        return None

    def close(self) -> None:
        self.send.close()


class _Batch:
    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: BaseException | None = None


class Store:
    def __init__(self, db: Any, *, window: int = 4096, watch_buffer: int = 1000) -> None:
        self.db = db
        self.window = window
        self.watch_buffer = watch_buffer
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self.rv = 0  # highest resourceVersion handed out
        self.published_rv = 0  # highest resourceVersion committed and given to watchers
        self.compacted_rv = 0  # events up to this resourceVersion are no longer kept
        self.events: deque[_Kept] = deque()
        # each object's last stored version and its JSON (used only on the database thread, in _persist)
        self._last_json: dict[tuple[str, str, str], tuple[dict[str, Any], str]] = {}
        self.watchers: set[Watcher] = set()
        self._pending: list[Event] = []
        self._batch = _Batch()
        self._wakeup = trio.Event()
        self._pruned_rv = 0
        self._models: tuple[Any, Any] | None = None

    # -- start-up -----------------------------------------------------------------------------------------

    def _make_models(self) -> tuple[Any, Any]:
        import peewee

        class ApiObject(peewee.Model):
            key = peewee.TextField()
            namespace = peewee.TextField()
            name = peewee.TextField()
            rv = peewee.IntegerField()
            data = peewee.TextField()

            class Meta:
                table_name = "apiserver_objects"
                primary_key = peewee.CompositeKey("key", "namespace", "name")

        class ApiEvent(peewee.Model):
            rv = peewee.IntegerField(primary_key=True)
            type = peewee.TextField()
            key = peewee.TextField()
            namespace = peewee.TextField()
            name = peewee.TextField()
            data = peewee.TextField()
            old = peewee.TextField(null=True)

            class Meta:
                table_name = "apiserver_events"

        return ApiObject, ApiEvent

    async def open(self) -> None:
        self._models = self._make_models()
        self.db.bind(self._models)
        objects, events, max_rv = await self.db.run(self._load)
        for key, namespace, name, data in objects:
            self.objects.setdefault(key, {})[(namespace, name)] = data
        self.events = deque(events)
        self.rv = self.published_rv = max_rv
        self.compacted_rv = self.events[0].rv - 1 if self.events else max_rv
        self._pruned_rv = self.compacted_rv
        log.info("apiserver store: %d objects, resourceVersion %d", sum(map(len, self.objects.values())), self.rv)

    def _load(self) -> tuple[list[tuple[str, str, str, dict[str, Any]]], list[_Kept], int]:
        assert self._models is not None
        obj_model, event_model = self._models
        objects = [(o.key, o.namespace, o.name, json.loads(o.data)) for o in obj_model.select()]
        max_obj = max((int(o[3]["metadata"].get("resourceVersion", 0)) for o in objects), default=0)
        last = event_model.select().order_by(event_model.rv.desc()).limit(self.window)
        events = [_Kept(e.rv, e.type, e.key, e.namespace, e.name, e.data, e.old or None) for e in reversed(list(last))]
        max_rv = max(max_obj, events[-1].rv if events else 0)
        return objects, events, max_rv

    # -- reading ------------------------------------------------------------------------------------------

    def get(self, key: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get(key, {}).get((namespace, name))

    def list(self, key: str, namespace: str | None = None) -> list[dict[str, Any]]:
        bucket = self.objects.get(key, {})
        if namespace is None:
            return [bucket[k] for k in sorted(bucket)]
        return [bucket[k] for k in sorted(k for k in bucket if k[0] == namespace)]

    def count(self, key: str) -> int:
        return len(self.objects.get(key, {}))

    # -- writing ------------------------------------------------------------------------------------------

    async def write(self, kind: str, key: str, obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        """Store ``obj`` (ADDED or MODIFIED) or remove it (DELETED); return it with its new resourceVersion.

        The caller must not change ``obj`` afterwards: the store keeps it as is.
        """
        meta = obj["metadata"]
        namespace, name = meta.get("namespace", ""), meta["name"]
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        bucket = self.objects.setdefault(key, {})
        if kind == "DELETED":
            bucket.pop((namespace, name), None)
        else:
            bucket[(namespace, name)] = obj
        self._pending.append(Event(self.rv, kind, key, namespace, name, obj, old))
        batch = self._batch
        self._wakeup.set()
        await batch.done.wait()
        if batch.error is not None:
            raise RuntimeError(f"storing {key} {namespace}/{name} failed: {batch.error}") from batch.error
        return obj

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The committer: persists pending changes in batches and hands their events to watchers."""
        task_status.started()
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                batch, self._pending = self._pending, []
                handle, self._batch = self._batch, _Batch()
                prune_to = self.compacted_rv if self.compacted_rv - self._pruned_rv >= 1000 else 0
                encoded: builtins.list[tuple[str, str | None]] | None = None
                try:
                    with trio.CancelScope(shield=True):
                        encoded = await self.db.run(self._persist, batch, prune_to)
                    if prune_to:
                        self._pruned_rv = prune_to
                except Exception as exc:
                    log.exception("apiserver store: committing %d changes failed", len(batch))
                    handle.error = exc
                self._publish(batch, encoded)
                handle.done.set()
        finally:
            for watcher in list(self.watchers):
                watcher.close()

    def _persist(self, batch: builtins.list[Event], prune_to: int) -> builtins.list[tuple[str, str | None]]:
        """Store the batch in one transaction; the JSON of each event's objects, kept for the history."""
        assert self._models is not None
        obj_model, event_model = self._models
        rows = []
        encoded: builtins.list[tuple[str, str | None]] = []
        for event in batch:
            ident = (event.key, event.namespace, event.name)
            data = json.dumps(event.obj)
            # an update's old object is the one stored last time: its JSON is reused (encoded once, kept once)
            last = self._last_json.get(ident)
            old = None if event.old is None else last[1] if last and last[0] is event.old else json.dumps(event.old)
            if event.type == "DELETED":
                self._last_json.pop(ident, None)
                obj_model.delete().where(
                    (obj_model.key == event.key)
                    & (obj_model.namespace == event.namespace)
                    & (obj_model.name == event.name)
                ).execute()
            else:
                self._last_json[ident] = (event.obj, data)
                obj_model.insert(
                    key=event.key, namespace=event.namespace, name=event.name, rv=event.rv, data=data
                ).on_conflict_replace().execute()
            rows.append(
                {
                    "rv": event.rv,
                    "type": event.type,
                    "key": event.key,
                    "namespace": event.namespace,
                    "name": event.name,
                    "data": data,
                    "old": old,
                }
            )
            encoded.append((data, old))
        for start in range(0, len(rows), 200):
            event_model.insert_many(rows[start : start + 200]).execute()
        if prune_to:
            event_model.delete().where(event_model.rv <= prune_to).execute()
        return encoded

    def _publish(self, batch: builtins.list[Event], encoded: builtins.list[tuple[str, str | None]] | None) -> None:
        if encoded is None:  # the database failed: the history still gets the batch
            encoded = [(json.dumps(e.obj), json.dumps(e.old) if e.old is not None else None) for e in batch]
        for event, (data, old) in zip(batch, encoded, strict=True):
            self.events.append(_Kept(event.rv, event.type, event.key, event.namespace, event.name, data, old))
            self.published_rv = event.rv
            for watcher in list(self.watchers):
                seen = watcher.translate(event)
                if seen is None:
                    continue
                try:
                    watcher.send.send_nowait(seen)
                except trio.WouldBlock:
                    # A watcher that cannot keep up is ended, as Kubernetes does; its client watches again.
                    log.warning("apiserver: closing a watch that fell %d events behind", self.watch_buffer)
                    watcher.overflowed = True
                    self.watchers.discard(watcher)
                    watcher.close()
                except trio.BrokenResourceError:
                    self.watchers.discard(watcher)
        while len(self.events) > self.window:
            self.compacted_rv = self.events.popleft().rv

    # -- watching -----------------------------------------------------------------------------------------

    def watch(
        self,
        keys: Iterable[str] | None,
        namespace: str | None,
        start_rv: int,
        predicates: builtins.list[Predicate] | None = None,
    ) -> Watcher:
        """A watcher receiving every event after ``start_rv``; raises :class:`Gone` when those are no longer kept."""
        if start_rv < self.compacted_rv:
            raise Gone(start_rv, self.compacted_rv + 1)
        backlog = sum(1 for event in self.events if event.rv > start_rv) if self.events and start_rv < self.rv else 0
        send, receive = trio.open_memory_channel[Event](self.watch_buffer + backlog)
        watcher = Watcher(
            frozenset(keys) if keys is not None else None, namespace, start_rv, send, receive, list(predicates or [])
        )
        # Replay and registration happen without a checkpoint in between: nothing is missed or doubled.
        for kept in self.events:
            if kept.rv <= start_rv or (watcher.keys is not None and kept.key not in watcher.keys):
                continue
            if namespace is not None and kept.namespace != namespace:
                continue
            seen = watcher.translate(kept.event())
            if seen is not None:
                send.send_nowait(seen)
        self.watchers.add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)
        watcher.close()

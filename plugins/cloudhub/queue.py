"""Per-node reliable delivery, as KubeEdge's cloudhub: an ack queue keyed by resource and a no-ack queue.

A message that needs an ACK waits under its key (the edge-side resource). A newer version replaces an
older one still waiting; an older one never replaces a newer one. It is sent, then resent every
``retry_interval`` until the edge answers with a ``response`` whose ``parent_msg_id`` is its id, at most
``max_sends`` times; after that the key is left to the sync controller. When the node disconnects
every waiting message is kept and sent again, from the first send, on the next connection.

The queue is transport-free: a session asks it what to send next (:meth:`NodeQueue.next_batch`) and
tells it about ACKs (:meth:`NodeQueue.ack`).
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from dataclasses import dataclass, field

import trio

from kubeedge import Message

from .records import compare_versions

log = logging.getLogger("kubeedge.cloudhub.queue")

# KubeEdge's no-ack messages (node_session.go: isNoAckMessage and friends).
NO_ACK_RESOURCES = ("podlist", "membership", "twin/cloud_updated", "serviceaccounttoken", "k8s/ca.crt", "volume")
NO_ACK_OPERATIONS = ("response", "error", "connect", "keepalive")


def needs_ack(message: Message) -> bool:
    if message.group == "user" or message.operation in NO_ACK_OPERATIONS:
        return False
    if message.source.startswith("router") or message.group == "task":
        return False
    resource = message.resource
    return not any(part in resource for part in NO_ACK_RESOURCES)


@dataclass(slots=True, eq=False)
class Entry:
    key: str
    message: Message
    uid: str
    enqueued: float
    sends: int = 0

    @property
    def version(self) -> str:
        return self.message.resource_version


@dataclass
class NodeQueue:
    node: str
    retry_interval: float = 5.0
    max_sends: int = 5
    window: int = 256
    no_ack_limit: int = 1024
    entries: dict[str, Entry] = field(default_factory=dict)
    inflight: dict[str, Entry] = field(default_factory=dict)
    no_ack: deque[Message] = field(default_factory=deque)
    wake: trio.Event = field(default_factory=trio.Event)
    _ready: deque[str] = field(default_factory=deque)
    _ready_keys: set[str] = field(default_factory=set)
    _retries: list[tuple[float, int, str]] = field(default_factory=list)
    _seq: int = 0
    timer_due: float | None = None  # when the hub's retry timer will wake this queue
    gave_up: int = 0
    dropped_older: int = 0

    # -- filling ----------------------------------------------------------------------------------------

    def add(self, entry: Entry) -> bool:
        """Queue ``entry`` unless a newer version of its key is already waiting. Returns whether queued."""
        existing = self.entries.get(entry.key)
        if existing is not None and entry.version and existing.version:
            order = compare_versions(entry.version, existing.version)
            if order < 0 or (order == 0 and entry.message.operation == existing.message.operation):
                self.dropped_older += 1
                return False
        self.entries[entry.key] = entry
        if entry.key not in self._ready_keys:
            self._ready.append(entry.key)
            self._ready_keys.add(entry.key)
            self.wake.set()
        return True

    def add_no_ack(self, message: Message) -> None:
        if len(self.no_ack) >= self.no_ack_limit:
            dropped = self.no_ack.popleft()
            log.warning("node %s: no-ack queue full, dropped %s %s", self.node, dropped.operation, dropped.resource)
        self.no_ack.append(message)
        self.wake.set()

    def drop(self, key: str) -> None:
        self.entries.pop(key, None)

    # -- draining (one session at a time) --------------------------------------------------------------

    def next_due(self) -> float | None:
        """When the earliest resend falls due (trio time), if any.

        Resends of acknowledged messages are dropped from the front first: on a busy hub nearly every
        message is acknowledged long before its resend, and waking the sender only to skip them cost
        more than half a scheduler turn per message (bench/link.py).
        """
        retries, inflight = self._retries, self.inflight
        while retries and retries[0][2] not in inflight:
            heapq.heappop(retries)
        return retries[0][0] if retries else None

    def next_batch(self, now: float, limit: int = 64) -> list[Message]:
        """Messages to send now: no-ack ones, due resends, then new keys while the window allows."""
        batch: list[Message] = []
        while self.no_ack and len(batch) < limit:
            batch.append(self.no_ack.popleft())
        while self._retries and self._retries[0][0] <= now and len(batch) < limit:
            _, _, msg_id = heapq.heappop(self._retries)
            entry = self.inflight.get(msg_id)
            if entry is None:
                continue  # acknowledged meanwhile
            if self.entries.get(entry.key) is not entry:
                del self.inflight[msg_id]  # replaced by a newer version, which is sent on its own
                continue
            if entry.sends >= self.max_sends:
                del self.inflight[msg_id]
                del self.entries[entry.key]
                self.gave_up += 1
                log.warning(
                    "node %s: no ACK for %s %s (version %s) after %d sends; left to the sync controller",
                    self.node,
                    entry.message.operation,
                    entry.key,
                    entry.version or "-",
                    entry.sends,
                )
                continue
            self._send(entry, now)
            batch.append(entry.message)
        while self._ready and len(batch) < limit and len(self.inflight) < self.window:
            key = self._ready.popleft()
            self._ready_keys.discard(key)
            ready = self.entries.get(key)
            if ready is None or ready.sends:
                continue
            self._send(ready, now)
            batch.append(ready.message)
        return batch

    def _send(self, entry: Entry, now: float) -> None:
        entry.sends += 1
        self.inflight[entry.message.msg_id] = entry
        self._seq += 1
        heapq.heappush(self._retries, (now + self.retry_interval, self._seq, entry.message.msg_id))

    def has_ready(self) -> bool:
        return bool(self.no_ack) or (bool(self._ready) and len(self.inflight) < self.window)

    def ack(self, msg_id: str) -> Entry | None:
        """The entry ``msg_id`` acknowledged, or None when it is not one of ours."""
        entry = self.inflight.pop(msg_id, None)
        if entry is None:
            return None
        if self.entries.get(entry.key) is entry:
            del self.entries[entry.key]
        if len(self.inflight) == self.window - 1 and self._ready:
            self.wake.set()  # the window has room again
        return entry

    def disconnected(self) -> None:
        """The session ended: keep every waiting message, to be sent afresh on the next connection."""
        self.inflight.clear()
        self._retries.clear()
        self._ready.clear()
        self._ready_keys.clear()
        for key, entry in self.entries.items():
            entry.sends = 0
            self._ready.append(key)
            self._ready_keys.add(key)

"""The bus: beehive's message context on trio memory channels.

One bounded channel per module (1024 by default, as beehive). A full channel makes the sender wait:
backpressure, never a silent drop. Synchronous requests wait for the reply whose ``parent_msg_id`` is the
request's id; a reply that arrives after its requester gave up is dropped and counted, not kept.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass

import trio

from .message import Message

__all__ = ["Bus", "BusError", "SyncTimeout", "UnknownGroup", "UnknownModule"]

log = logging.getLogger("kubeedge.bus")

DEFAULT_BUFFER = 1024
DEFAULT_SYNC_TIMEOUT = 30.0


class BusError(Exception):
    """Base of the bus's errors."""


class UnknownModule(BusError, LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"no module named {name!r} on the bus (modules: {', '.join(sorted(known)) or 'none'})")
        self.name = name


class UnknownGroup(BusError, LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"no module in group {name!r} on the bus (groups: {', '.join(sorted(known)) or 'none'})")
        self.name = name


class SyncTimeout(BusError, TimeoutError):
    def __init__(self, target: str, message: Message, timeout: float) -> None:
        super().__init__(
            f"no reply from {target!r} within {timeout:g} s to {message.operation} {message.resource}"
            f" (msg_id {message.msg_id})"
        )
        self.target = target


@dataclass(slots=True)
class _Mailbox:
    name: str
    group: str
    send: trio.MemorySendChannel[Message]
    receive: trio.MemoryReceiveChannel[Message]


class Bus:
    """Beehive's context: ``send``, ``receive``, ``send_sync``, ``send_resp`` and the group variants."""

    def __init__(self, buffer: int = DEFAULT_BUFFER) -> None:
        self.buffer = buffer
        self._mailboxes: dict[str, _Mailbox] = {}
        self._groups: dict[str, list[str]] = {}
        self._waiters: dict[str, trio.MemorySendChannel[Message]] = {}
        self.sent: Counter[str] = Counter()
        self.late_replies = 0

    # -- membership -----------------------------------------------------------------------------------

    def add_module(self, name: str, group: str = "") -> None:
        """Give a module its channel. Adding the same name twice keeps the first channel."""
        if name in self._mailboxes:
            return
        send, receive = trio.open_memory_channel[Message](self.buffer)
        self._mailboxes[name] = _Mailbox(name, group or name, send, receive)
        self._groups.setdefault(group or name, []).append(name)

    def remove_module(self, name: str) -> None:
        box = self._mailboxes.pop(name, None)
        if box is None:
            return
        members = self._groups.get(box.group, [])
        if name in members:
            members.remove(name)
        if not members:
            self._groups.pop(box.group, None)
        box.send.close()

    @property
    def modules(self) -> list[str]:
        return list(self._mailboxes)

    def group_of(self, name: str) -> str:
        return self._mailbox(name).group

    def members(self, group: str) -> list[str]:
        members = self._groups.get(group)
        if not members:
            raise UnknownGroup(group, list(self._groups))
        return list(members)

    def has_module(self, name: str) -> bool:
        return name in self._mailboxes

    def queue_depth(self, name: str) -> int:
        return self._mailbox(name).send.statistics().current_buffer_used

    def _mailbox(self, name: str) -> _Mailbox:
        box = self._mailboxes.get(name)
        if box is None:
            raise UnknownModule(name, list(self._mailboxes))
        return box

    # -- asynchronous ---------------------------------------------------------------------------------

    async def send(self, module: str, message: Message) -> None:
        """Put ``message`` in ``module``'s channel, waiting while it is full."""
        box = self._mailboxes.get(module)
        if box is None:
            raise UnknownModule(module, list(self._mailboxes))
        await box.send.send(message)
        self.sent[module] += 1

    def send_nowait(self, module: str, message: Message) -> None:
        """Like :meth:`send` for callers that cannot wait; raises ``trio.WouldBlock`` when full."""
        self._mailbox(module).send.send_nowait(message)
        self.sent[module] += 1

    async def receive(self, module: str) -> Message:
        """The next message for ``module``."""
        return await self._mailbox(module).receive.receive()

    def channel(self, module: str) -> trio.MemoryReceiveChannel[Message]:
        """``module``'s receive channel, for ``async for message in bus.channel(name)``."""
        return self._mailbox(module).receive

    async def send_to_group(self, group: str, message: Message) -> None:
        """Send ``message`` to every module of ``group``."""
        for name in self.members(group):
            await self.send(name, message)

    # -- synchronous ----------------------------------------------------------------------------------

    async def send_sync(self, module: str, message: Message, timeout: float = DEFAULT_SYNC_TIMEOUT) -> Message:  # noqa: ASYNC109
        """Send ``message`` and wait up to ``timeout`` seconds for its reply (see :meth:`send_resp`)."""
        self._mailbox(module)
        message.sync = True
        reply_send, reply_receive = trio.open_memory_channel[Message](1)
        self._waiters[message.msg_id] = reply_send
        try:
            with trio.move_on_after(timeout):
                await self.send(module, message)
                return await reply_receive.receive()
            raise SyncTimeout(module, message, timeout)
        finally:
            del self._waiters[message.msg_id]
            reply_send.close()
            reply_receive.close()

    async def send_to_group_sync(
        self,
        group: str,
        message: Message,
        timeout: float = DEFAULT_SYNC_TIMEOUT,  # noqa: ASYNC109
    ) -> list[Message]:
        """Send a copy of ``message`` to each module of ``group``; return every reply, in member order."""
        members = self.members(group)
        replies: list[Message | None] = [None] * len(members)

        async def ask(index: int, name: str) -> None:
            msg_id = f"{message.msg_id}.{index}" if len(members) > 1 else message.msg_id
            copy = dataclasses.replace(message, msg_id=msg_id)
            replies[index] = await self.send_sync(name, copy, timeout)

        async with trio.open_nursery() as nursery:
            for index, name in enumerate(members):
                nursery.start_soon(ask, index, name)
        return [reply for reply in replies if reply is not None]

    def send_resp(self, message: Message) -> bool:
        """Deliver a reply to whoever waits on ``message.parent_msg_id``.

        Returns False when nobody waits any more (the requester timed out): the reply is dropped.
        """
        waiter = self._waiters.get(message.parent_msg_id)
        if waiter is None:
            self.late_replies += 1
            log.debug("dropped late reply %s to %s", message.msg_id, message.parent_msg_id)
            return False
        try:
            waiter.send_nowait(message)
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.late_replies += 1
            return False
        return True

    def is_awaited(self, msg_id: str) -> bool:
        """Whether a ``send_sync`` caller is still waiting for a reply to ``msg_id``."""
        return msg_id in self._waiters

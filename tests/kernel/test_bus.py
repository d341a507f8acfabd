"""The bus: per-module bounded channels, groups, synchronous requests, backpressure, clear errors."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from kubeedge import Bus, Message, SyncTimeout, UnknownGroup, UnknownModule


def msg(**kwargs: object) -> Message:
    return Message(source="test", group="g", operation="query", resource="r", **kwargs)  # type: ignore[arg-type]


async def test_send_and_receive_in_order() -> None:
    bus = Bus()
    bus.add_module("a", "g")
    sent = [msg(content=i) for i in range(5)]
    for m in sent:
        await bus.send("a", m)
    assert [await bus.receive("a") for _ in sent] == sent
    assert bus.sent["a"] == 5


async def test_unknown_module_and_group_are_named() -> None:
    bus = Bus()
    bus.add_module("a", "g")
    with pytest.raises(UnknownModule, match="'nope'.*modules: a"):
        await bus.send("nope", msg())
    with pytest.raises(UnknownGroup, match="'ghost'.*groups: g"):
        await bus.send_to_group("ghost", msg())


async def test_full_channel_applies_backpressure_and_drops_nothing() -> None:
    bus = Bus(buffer=2)
    bus.add_module("slow")
    delivered: list[object] = []

    async def producer() -> None:
        for i in range(10):
            await bus.send("slow", msg(content=i))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        assert bus.queue_depth("slow") == 2  # the producer waits; nothing was thrown away
        for _ in range(10):
            delivered.append((await bus.receive("slow")).content)
    assert delivered == list(range(10))
    with pytest.raises(trio.WouldBlock):
        for i in range(3):
            bus.send_nowait("slow", msg(content=i))


async def test_send_to_group_reaches_every_member() -> None:
    bus = Bus()
    bus.add_module("eventbus", "bus")
    bus.add_module("servicebus", "bus")
    await bus.send_to_group("bus", msg(content="hi"))
    assert (await bus.receive("eventbus")).content == "hi"
    assert (await bus.receive("servicebus")).content == "hi"
    assert bus.members("bus") == ["eventbus", "servicebus"]


async def answer(bus: Bus, name: str, count: int, prefix: str = "re:") -> None:
    for _ in range(count):
        request = await bus.receive(name)
        assert request.sync
        bus.send_resp(request.reply(f"{prefix}{request.content}", source=name))


async def test_send_sync_returns_the_matching_reply() -> None:
    bus = Bus()
    bus.add_module("meta")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer, bus, "meta", 1)
        reply = await bus.send_sync("meta", msg(content="x"), timeout=5)
    assert reply.content == "re:x"
    assert not bus.is_awaited(reply.parent_msg_id)


async def test_send_sync_times_out_and_a_late_reply_is_dropped() -> None:
    bus = Bus()
    bus.add_module("meta")
    request = msg(content="x")
    with pytest.raises(SyncTimeout, match="no reply from 'meta' within 0.05 s"):
        await bus.send_sync("meta", request, timeout=0.05)
    late = await bus.receive("meta")
    assert bus.send_resp(late.reply("too late")) is False
    assert bus.late_replies == 1
    assert not bus.is_awaited(request.msg_id)  # nothing left behind for the timed-out request


async def test_send_to_group_sync_collects_every_reply() -> None:
    bus = Bus()
    bus.add_module("a", "g")
    bus.add_module("b", "g")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer, bus, "a", 1, "a:")
        nursery.start_soon(answer, bus, "b", 1, "b:")
        replies = await bus.send_to_group_sync("g", msg(content="q"), timeout=5)
    assert sorted(r.content for r in replies) == ["a:q", "b:q"]


async def test_remove_module_forgets_it() -> None:
    bus = Bus()
    bus.add_module("a", "g")
    bus.remove_module("a")
    assert not bus.has_module("a")
    with pytest.raises(UnknownGroup):
        bus.members("g")

"""cloudhub's websocket frame layer (plugins/cloudhub/wsconn.py) against wsproto as the client, over real
TCP on 127.0.0.1: several frames in one read, fragments, pings, the close handshake both ways, and the
refusals (unmasked frame, bad UTF-8, oversize message) with their RFC 6455 close codes."""

from __future__ import annotations

import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from kubeedge.plugins.cloudhub.wsconn import LinkClosed, ServerLink


@dataclass
class Client:
    stream: trio.SocketStream
    ws: WSConnection

    async def send(self, *events: object) -> None:
        await self.stream.send_all(b"".join(self.ws.send(event) for event in events))  # type: ignore[arg-type]

    async def events(self, until: type) -> list[object]:
        """Events until one of type ``until`` (included)."""
        seen: list[object] = []
        with trio.fail_after(5):
            while True:
                for event in self.ws.events():  # what earlier reads left pending first
                    seen.append(event)
                    if isinstance(event, until):
                        return seen
                data = await self.stream.receive_some()
                self.ws.receive_data(data or None)


@asynccontextmanager
async def linked(max_message_size: int = 1 << 20) -> AsyncIterator[tuple[ServerLink, Client]]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client_stream = await trio.open_tcp_stream("127.0.0.1", port)
    server_stream = await listeners[0].accept()
    link = ServerLink(server_stream, max_message_size=max_message_size)
    client = Client(client_stream, WSConnection(ConnectionType.CLIENT))
    await client.send(Request(host="127.0.0.1", target="/p/edge-1/events", extra_headers=[(b"node_id", b"edge-1")]))
    request = await link.read_request()
    assert request.target == "/p/edge-1/events" and (b"node_id", b"edge-1") in request.extra_headers
    await link.accept()
    await client.events(AcceptConnection)
    try:
        yield link, client
    finally:
        await client_stream.aclose()
        await trio.aclose_forcefully(server_stream)
        await listeners[0].aclose()


async def _receive(link: ServerLink, count: int) -> list[object]:
    got: list[object] = []
    with trio.fail_after(5):
        while len(got) < count:
            got += await link.receive()
    return got


async def test_frames_in_one_write_fragments_and_binary() -> None:
    async with linked() as (link, client):
        await client.send(
            TextMessage("first"),
            TextMessage("é" * 200),  # 16-bit length
            TextMessage("frag", message_finished=False),
            TextMessage("ment", message_finished=True),
            BytesMessage(b"\x00\x01"),
            TextMessage("x" * 70000),  # 64-bit length
        )
        assert await _receive(link, 5) == ["first", "é" * 200, "fragment", b"\x00\x01", "x" * 70000]


async def test_messages_go_out_one_per_frame() -> None:
    async with linked() as (link, client):
        await link.send_frames(["a", "b" * 300, "c" * 70000])
        messages: list[str] = []
        part = ""
        while len(messages) < 3:
            event = (await client.events(TextMessage))[-1]
            assert isinstance(event, TextMessage)
            part += event.data
            if event.message_finished:
                messages.append(part)
                part = ""
        assert messages == ["a", "b" * 300, "c" * 70000]


async def test_a_ping_is_answered_with_its_payload() -> None:
    async with linked() as (link, client):
        await client.send(Ping(b"hello"), TextMessage("after"))
        assert await _receive(link, 1) == ["after"]
        pong = (await client.events(Pong))[-1]
        assert isinstance(pong, Pong) and pong.payload == b"hello"


async def test_the_peer_closes_messages_before_its_close_frame_are_kept() -> None:
    async with linked() as (link, client):
        await client.send(TextMessage("ack-1"), TextMessage("ack-2"), CloseConnection(code=4001, reason="bye"))
        assert await _receive(link, 2) == ["ack-1", "ack-2"]
        with pytest.raises(LinkClosed) as info:
            await link.receive()
        assert (info.value.code, info.value.reason) == (4001, "bye")
        echoed = (await client.events(CloseConnection))[-1]
        assert isinstance(echoed, CloseConnection) and echoed.code == 4001
        with pytest.raises(LinkClosed):
            await link.send_frames(["too late"])


async def test_aclose_completes_the_close_handshake() -> None:
    async with linked() as (link, client):

        async def peer() -> None:
            close = (await client.events(CloseConnection))[-1]
            assert isinstance(close, CloseConnection) and (close.code, close.reason) == (1001, "going away")
            await client.send(close.response())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer)
            with trio.fail_after(5):
                await link.aclose(1001, "going away")
        assert link.closed is not None and link.closed.code == 1001


def _masked_frame(opcode: int, payload: bytes, *, masked: bool = True, declared: int | None = None) -> bytes:
    size = len(payload) if declared is None else declared
    head = bytes([0x80 | opcode])
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (_masked_frame(0x1, b"plain", masked=False), 1002),  # clients must mask
        (_masked_frame(0x1, b"\xff\xfe not utf-8"), 1007),
        (_masked_frame(0x0, b"continuation of nothing"), 1002),
        (_masked_frame(0x9, b"p" * 126), 1002),  # control frames carry at most 125 bytes
        (_masked_frame(0x3, b"reserved opcode"), 1002),
        (_masked_frame(0x1, b"", declared=2 << 20), 1009),  # refused on its header, before any payload
    ],
)
async def test_protocol_violations_close_with_their_code(raw: bytes, code: int) -> None:
    async with linked(max_message_size=1 << 20) as (link, client):
        await client.stream.send_all(_masked_frame(0x1, b"fine") + raw)
        assert await _receive(link, 1) == ["fine"]
        with pytest.raises(LinkClosed) as info:
            await link.receive()
        assert info.value.code == code
        close = (await client.events(CloseConnection))[-1]
        assert isinstance(close, CloseConnection) and close.code == code


async def test_a_fragmented_message_over_the_limit_is_refused() -> None:
    async with linked(max_message_size=1000) as (link, client):
        await client.send(TextMessage("a" * 600, message_finished=False), TextMessage("b" * 600))
        with pytest.raises(LinkClosed) as info:
            await _receive(link, 1)
        assert info.value.code == 1009


@pytest.mark.parametrize(
    ("payload", "seen", "echoed"),
    [(b"", 1005, 1005), (struct.pack("!H", 1006) + b"x", 1006, 1002), (struct.pack("!H", 4000), 4000, 4000)],
)
async def test_close_codes_are_echoed_when_they_may_be_sent(payload: bytes, seen: int, echoed: int) -> None:
    async with linked() as (link, client):
        await client.stream.send_all(_masked_frame(0x8, payload))
        with pytest.raises(LinkClosed) as info:
            await _receive(link, 1)
        assert info.value.code == seen
        close = (await client.events(CloseConnection))[-1]
        assert isinstance(close, CloseConnection) and close.code == echoed

"""The server end of one edge's websocket, with no task of its own.

trio-websocket runs a reader task per connection that hands every message to the session through a
memory channel, and takes a lock (a scheduler turn) for every write. On a hub with thousands of messages
a second those hand-offs were most of the work per message (bench/link.py: about twelve task steps per
acknowledged message, four of them in the websocket layer). Here the session's reader calls
:meth:`ServerLink.receive`, which reads once from the stream and returns every complete message in what
arrived; ACKs are matched right there. Writes take the lock without a scheduler turn when it is free.

wsproto does the opening handshake (HTTP upgrade, refusals with a status and a body). Frames are read and
written here (RFC 6455 section 5): wsproto's general frame machinery cost about 9 us per received ACK,
the parsing below about 2. Client frames must be masked and carry no RSV bits (no extension is ever
negotiated); text must be UTF-8 (1007 otherwise); a message over ``max_message_size`` closes with 1009
before its payload is buffered; pings are answered; the close handshake echoes the peer's code.
"""

from __future__ import annotations

import struct
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.utilities import RemoteProtocolError

RECEIVE_SIZE = 65536
ABNORMAL = 1006
NO_STATUS = 1005
PROTOCOL_ERROR = 1002
INVALID_DATA = 1007
TOO_BIG = 1009
UNSENDABLE = frozenset({1004, ABNORMAL, 1015})  # reserved: never in a close frame (RFC 6455 7.4.1)

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class LinkClosed(Exception):
    """The websocket is closed (or lost); ``code`` and ``reason`` say how."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class HandshakeFailed(Exception):
    """The peer's opening request was not a websocket upgrade (it has been answered and closed)."""


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final frame (RFC 6455 5.2), as a server sends it."""
    size = len(payload)
    if size < 126:
        return bytes((0x80 | opcode, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, size) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, size) + payload


def close_payload(code: int, reason: str) -> bytes:
    if code == NO_STATUS:
        return b""
    return struct.pack("!H", code) + reason.encode()[:123]


def unmask(data: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    size = len(data)
    if not size:
        return b""
    key = int.from_bytes((bytes(mask) * (size // 4 + 1))[:size], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(size, "big")


class ServerLink:
    """One websocket connection on ``stream`` (server side): handshake, messages, close."""

    def __init__(self, stream: trio.abc.Stream, *, max_message_size: int) -> None:
        self.stream = stream
        self.max_message_size = max_message_size
        self.closed: LinkClosed | None = None
        self._lock = trio.Lock()
        self._buffer = bytearray()
        self._opcode: int | None = None  # of the fragmented message being assembled
        self._parts: list[bytes] = []
        self._size = 0
        self._open = False
        self._close_sent = False
        self._stop = False  # no more frames are parsed: the peer closed, or broke the protocol
        self._handshake = WSConnection(ConnectionType.SERVER)

    # -- opening handshake ---------------------------------------------------------------------------

    async def read_request(self) -> Request:
        """The HTTP upgrade request. Raises :class:`HandshakeFailed` (after answering) or :class:`LinkClosed`."""
        while True:
            data = await self._receive_some()
            try:
                self._handshake.receive_data(bytes(data))
                for event in self._handshake.events():
                    if isinstance(event, Request):
                        return event
            except RemoteProtocolError as exc:
                hint = exc.event_hint
                if isinstance(hint, RejectConnection):
                    await self._write(self._handshake.send(hint))
                await trio.aclose_forcefully(self.stream)
                raise HandshakeFailed(str(exc)) from None

    async def accept(self) -> None:
        await self._write(self._handshake.send(AcceptConnection()))
        self._open = True

    async def reject(self, status: int, body: bytes) -> None:
        headers = [(b"Content-length", str(len(body)).encode("ascii"))] if body else []
        data = self._handshake.send(RejectConnection(status_code=status, headers=headers, has_body=bool(body)))
        if body:
            data += self._handshake.send(RejectData(data=body))
        try:
            await self._write(data)
        finally:
            await trio.aclose_forcefully(self.stream)

    # -- messages ------------------------------------------------------------------------------------

    async def receive(self) -> list[Any]:
        """Read once from the stream; every message (str or bytes) completed by what arrived, maybe none.

        Pings are answered here. Messages that arrived before a close frame are returned first; then
        :class:`LinkClosed` is raised: when the peer closed (after answering its close frame), when the
        connection is lost, and after closing for a protocol error, bad UTF-8 or an oversize message.
        A failed write does not stop reading: what the peer sent before its close frame is still read.
        """
        if not self._stop:
            self._buffer += await self._receive_some()
            messages = await self._parse()
            if messages or not self._stop:
                return messages
        raise self._closed_error()

    async def _parse(self) -> list[Any]:
        buffer = self._buffer
        messages: list[Any] = []
        pos, end = 0, len(buffer)
        while not self._stop and end - pos >= 2:
            first, second = buffer[pos], buffer[pos + 1]
            opcode, size, head = first & 0x0F, second & 0x7F, 2
            if size == 126:
                if end - pos < 4:
                    break
                size, head = int.from_bytes(buffer[pos + 2 : pos + 4], "big"), 4
            elif size == 127:
                if end - pos < 10:
                    break
                size, head = int.from_bytes(buffer[pos + 2 : pos + 10], "big"), 10
            fin = first & 0x80
            if first & 0x70 or not second & 0x80:
                await self._fail(PROTOCOL_ERROR, "reserved bits set" if first & 0x70 else "client frame not masked")
                break
            if opcode >= OP_CLOSE and (not fin or size > 125):
                await self._fail(PROTOCOL_ERROR, "fragmented or oversized control frame")
                break
            if opcode < OP_CLOSE and self._size + size > self.max_message_size:
                await self._fail(TOO_BIG, f"Exceeded maximum message size: {self.max_message_size} bytes")
                break
            start = pos + head + 4
            if end - start < size:
                break
            payload = unmask(buffer[start : start + size], buffer[pos + head : start])
            pos = start + size
            if opcode in (OP_TEXT, OP_BINARY, OP_CONTINUATION):
                if (opcode == OP_CONTINUATION) != (self._opcode is not None):
                    await self._fail(PROTOCOL_ERROR, "unexpected continuation state")
                    break
                if not fin:
                    self._opcode = self._opcode if opcode == OP_CONTINUATION else opcode
                    self._parts.append(payload)
                    self._size += size
                    continue
                kind = self._opcode if opcode == OP_CONTINUATION else opcode
                if self._parts:
                    self._parts.append(payload)
                    payload = b"".join(self._parts)
                self._opcode, self._parts, self._size = None, [], 0
                if kind == OP_TEXT:
                    try:
                        messages.append(payload.decode())
                    except UnicodeDecodeError:
                        await self._fail(INVALID_DATA, "text message is not UTF-8")
                        break
                else:
                    messages.append(payload)
            elif opcode == OP_PING:
                await self._write(frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                await self._closed_by_peer(payload)
            elif opcode != OP_PONG:
                await self._fail(PROTOCOL_ERROR, f"unknown opcode {opcode}")
        del buffer[:pos]
        return messages

    async def _closed_by_peer(self, payload: bytes) -> None:
        if len(payload) == 1:
            await self._fail(PROTOCOL_ERROR, "close frame with a one-byte payload")
            return
        code = int.from_bytes(payload[:2], "big") if payload else NO_STATUS
        reason = payload[2:].decode(errors="replace")
        self.closed = LinkClosed(code, reason)
        self._stop = True
        if not self._close_sent:
            self._close_sent = True
            if code != NO_STATUS and (code in UNSENDABLE or not 1000 <= code < 5000):
                code, reason = PROTOCOL_ERROR, f"close code {code} may not be sent"
            await self._write(frame(OP_CLOSE, close_payload(code, reason)))  # the peer's code, echoed

    async def send_frames(self, frames: list[str]) -> None:
        """Send text frames, one message each, in one write."""
        if self.closed is not None or self._close_sent or not self._open:
            raise self._closed_error() if self.closed else LinkClosed(ABNORMAL, "connection is closing")
        if len(frames) == 1:
            data = frame(OP_TEXT, frames[0].encode())
        else:
            data = b"".join([frame(OP_TEXT, text.encode()) for text in frames])
        await self._write(data)

    async def send_message(self, text: str) -> None:
        await self.send_frames([text])

    # -- closing -------------------------------------------------------------------------------------

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """Close handshake (send ours, read until the peer's; what else arrives is dropped), then the stream."""
        try:
            if self._open and not self._close_sent:
                self.closed = self.closed or LinkClosed(code, reason or "")
                self._close_sent = True
                await self._write(frame(OP_CLOSE, close_payload(code, reason or "")))
            while self._open and not self._stop:
                self._buffer += await self._receive_some()
                await self._parse()  # the session is over: messages are dropped, the peer's close ends this
        except LinkClosed:
            pass
        finally:
            await trio.aclose_forcefully(self.stream)

    async def _fail(self, code: int, reason: str) -> None:
        """Close with ``code`` because of what the peer sent; :meth:`receive` raises from then on."""
        self.closed = LinkClosed(code, reason)
        self._stop = True
        if self._open and not self._close_sent:
            self._close_sent = True
            try:
                await self._write(frame(OP_CLOSE, close_payload(code, reason)))
            except LinkClosed:
                pass

    def _closed_error(self) -> LinkClosed:
        assert self.closed is not None
        return LinkClosed(self.closed.code, self.closed.reason)

    # -- the stream ----------------------------------------------------------------------------------

    async def _receive_some(self) -> bytes | bytearray:
        try:
            data = await self.stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.closed = self.closed or LinkClosed(ABNORMAL, f"connection lost ({exc or type(exc).__name__})")
            raise self._closed_error() from None
        if not data:
            self.closed = self.closed or LinkClosed(ABNORMAL, "connection closed without a close frame")
            raise self._closed_error()
        return data

    async def _write(self, data: bytes) -> None:
        # Several tasks write (the pump, the reader's replies and pongs, close): one at a time. A free
        # lock is taken without a scheduler turn.
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.closed = self.closed or LinkClosed(ABNORMAL, f"connection lost ({exc or type(exc).__name__})")
            raise self._closed_error() from None
        finally:
            self._lock.release()

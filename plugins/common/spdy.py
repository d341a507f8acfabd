"""SPDY/3.1 framing, pure (no I/O): what a kube-apiserver speaks to a kubelet for exec/attach/port-forward, and
what kubectl falls back to when websockets are off.

Frames (draft-mbelshe-httpbis-spdy-00 / SPDY draft 3, plus 3.1's session window):

- control frame: ``1 | version (15) | type (16) | flags (8) | length (24) | data``;
- data frame: ``0 | stream id (31) | flags (8) | length (24) | data``; ``FLAG_FIN`` ends the sender's half.

Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are ``count (32)`` then ``len (32) name len (32) value`` pairs,
names lower case, several values of one name joined by NUL; the block is zlib-compressed with the SPDY/3
dictionary, one compression context per direction for the whole connection (a :class:`Codec` holds both),
each block ended with a sync flush. Unknown control frame types are kept as :class:`UnknownFrame` (the spec
says to ignore them).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_WINDOW",
    "DICTIONARY",
    "FLAG_FIN",
    "FLAG_UNIDIRECTIONAL",
    "GOAWAY",
    "HEADERS",
    "PING",
    "RST_STREAM",
    "SETTINGS",
    "SETTINGS_INITIAL_WINDOW_SIZE",
    "SYN_REPLY",
    "SYN_STREAM",
    "VERSION",
    "WINDOW_UPDATE",
    "Codec",
    "DataFrame",
    "Frame",
    "GoAway",
    "HeaderCompressor",
    "HeaderDecompressor",
    "Headers",
    "HeadersFrame",
    "Ping",
    "RstStream",
    "Settings",
    "SpdyError",
    "SynReply",
    "SynStream",
    "UnknownFrame",
    "WindowUpdate",
    "decode_header_block",
    "encode_header_block",
]

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_SETTINGS_CLEAR_SETTINGS = 0x01
SETTINGS_MAX_CONCURRENT_STREAMS = 4
SETTINGS_INITIAL_WINDOW_SIZE = 7
DEFAULT_WINDOW = 65536  # SPDY/3.1: each stream's and the session's initial window

# RST_STREAM status codes
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, UNSUPPORTED_VERSION, CANCEL, INTERNAL_ERROR = 1, 2, 3, 4, 5, 6
FLOW_CONTROL_ERROR, STREAM_IN_USE, STREAM_ALREADY_CLOSED = 7, 8, 9
# GOAWAY status codes
GOAWAY_OK, GOAWAY_PROTOCOL_ERROR, GOAWAY_INTERNAL_ERROR = 0, 1, 2

MAX_LENGTH = (1 << 24) - 1
MAX_STREAM_ID = (1 << 31) - 1


def _dictionary() -> bytes:
    """The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1): length-prefixed words, then text."""
    words = (
        "options head post put delete trace accept accept-charset accept-encoding accept-language accept-ranges "
        "age allow authorization cache-control connection content-base content-encoding content-language "
        "content-length content-location content-md5 content-range content-type date etag expect expires from "
        "host if-match if-modified-since if-none-match if-range if-unmodified-since last-modified location "
        "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after server te trailer "
        "transfer-encoding upgrade user-agent vary via warning www-authenticate method get status"
    ).split()
    words += ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
    text = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
        "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    )
    return b"".join(struct.pack(">I", len(w)) + w.encode() for w in words) + text.encode()


DICTIONARY = _dictionary()


class SpdyError(ValueError):
    """A frame or header block that breaks the protocol; the text says how."""


Headers = list[tuple[str, str]]


def encode_header_block(headers: Headers) -> bytes:
    """The uncompressed name/value block; names go lower case, as SPDY/3 requires."""
    out = [struct.pack(">I", len(headers))]
    for name, value in headers:
        raw_name, raw_value = name.lower().encode("utf-8"), value.encode("utf-8")
        if not raw_name:
            raise SpdyError("a header name may not be empty")
        out += [struct.pack(">I", len(raw_name)), raw_name, struct.pack(">I", len(raw_value)), raw_value]
    return b"".join(out)


def decode_header_block(block: bytes) -> Headers:
    def take(offset: int, size: int) -> tuple[bytes, int]:
        if offset + size > len(block):
            raise SpdyError("truncated header block")
        return block[offset : offset + size], offset + size

    raw, offset = take(0, 4)
    (count,) = struct.unpack(">I", raw)
    headers: Headers = []
    for _ in range(count):
        raw, offset = take(offset, 4)
        name, offset = take(offset, struct.unpack(">I", raw)[0])
        raw, offset = take(offset, 4)
        value, offset = take(offset, struct.unpack(">I", raw)[0])
        if not name:
            raise SpdyError("empty header name")
        headers.append((name.decode("utf-8", "replace"), value.decode("utf-8", "replace")))
    return headers


class HeaderCompressor:
    """One direction's compression context: every block is deflated against the dictionary, then sync-flushed."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(
            zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, DICTIONARY
        )

    def compress(self, headers: Headers) -> bytes:
        return self._z.compress(encode_header_block(headers)) + self._z.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    def __init__(self) -> None:
        self._z = zlib.decompressobj(15, DICTIONARY)

    def decompress(self, data: bytes) -> Headers:
        try:
            block = self._z.decompress(data)
        except zlib.error as exc:
            raise SpdyError(f"header block does not inflate: {exc}") from None
        return decode_header_block(block)


@dataclass(frozen=True)
class DataFrame:
    stream_id: int
    data: bytes = b""
    fin: bool = False


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: Headers = field(default_factory=list)
    associated_to: int = 0
    priority: int = 0
    fin: bool = False
    unidirectional: bool = False

    def header(self, name: str, default: str = "") -> str:
        return _header(self.headers, name, default)


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: Headers = field(default_factory=list)
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int = CANCEL


@dataclass(frozen=True)
class Settings:
    """``values``: setting id -> value; ``clear``: the sender asks to forget persisted settings."""

    values: dict[int, int] = field(default_factory=dict)
    clear: bool = False


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int = GOAWAY_OK


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers = field(default_factory=list)
    fin: bool = False


@dataclass(frozen=True)
class WindowUpdate:
    """``stream_id`` 0 is the session window (SPDY/3.1)."""

    stream_id: int
    delta: int


@dataclass(frozen=True)
class UnknownFrame:
    type: int
    flags: int
    data: bytes


Frame = (
    DataFrame | SynStream | SynReply | RstStream | Settings | Ping | GoAway | HeadersFrame | WindowUpdate | UnknownFrame
)


def _header(headers: Headers, name: str, default: str = "") -> str:
    name = name.lower()
    return next((v for k, v in headers if k.lower() == name), default)


def _control(type_: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_LENGTH:
        raise SpdyError(f"control frame of {len(payload)} bytes is too long")
    return struct.pack(">HHI", 0x8000 | VERSION, type_, (flags << 24) | len(payload)) + payload


def _stream_id(value: int) -> bytes:
    if not 0 <= value <= MAX_STREAM_ID:
        raise SpdyError(f"stream id {value} out of range")
    return struct.pack(">I", value)


class Codec:
    """One end of a connection: :meth:`encode` frames to send, :meth:`feed` received bytes and get frames.

    The header contexts live here, so every frame of the connection must go through the same codec, in order.
    """

    def __init__(self) -> None:
        self._compressor = HeaderCompressor()
        self._decompressor = HeaderDecompressor()
        self._buffer = bytearray()

    # -- sending ------------------------------------------------------------------------------------------

    def encode(self, frame: Frame) -> bytes:
        if isinstance(frame, DataFrame):
            if len(frame.data) > MAX_LENGTH:
                raise SpdyError(f"data frame of {len(frame.data)} bytes is too long")
            flags = FLAG_FIN if frame.fin else 0
            return _stream_id(frame.stream_id) + struct.pack(">I", (flags << 24) | len(frame.data)) + frame.data
        if isinstance(frame, SynStream):
            flags = (FLAG_FIN if frame.fin else 0) | (FLAG_UNIDIRECTIONAL if frame.unidirectional else 0)
            payload = (
                _stream_id(frame.stream_id)
                + _stream_id(frame.associated_to)
                + bytes([(frame.priority & 0x7) << 5, 0])
                + self._compressor.compress(frame.headers)
            )
            return _control(SYN_STREAM, flags, payload)
        if isinstance(frame, SynReply):
            payload = _stream_id(frame.stream_id) + self._compressor.compress(frame.headers)
            return _control(SYN_REPLY, FLAG_FIN if frame.fin else 0, payload)
        if isinstance(frame, HeadersFrame):
            payload = _stream_id(frame.stream_id) + self._compressor.compress(frame.headers)
            return _control(HEADERS, FLAG_FIN if frame.fin else 0, payload)
        if isinstance(frame, RstStream):
            return _control(RST_STREAM, 0, _stream_id(frame.stream_id) + struct.pack(">I", frame.status))
        if isinstance(frame, Settings):
            entries = b"".join(struct.pack(">II", key & 0xFFFFFF, value) for key, value in frame.values.items())
            payload = struct.pack(">I", len(frame.values)) + entries
            return _control(SETTINGS, FLAG_SETTINGS_CLEAR_SETTINGS if frame.clear else 0, payload)
        if isinstance(frame, Ping):
            return _control(PING, 0, struct.pack(">I", frame.ping_id & 0xFFFFFFFF))
        if isinstance(frame, GoAway):
            return _control(GOAWAY, 0, _stream_id(frame.last_good_stream_id) + struct.pack(">I", frame.status))
        if isinstance(frame, WindowUpdate):
            if not 1 <= frame.delta <= MAX_STREAM_ID:
                raise SpdyError(f"window delta {frame.delta} out of range")
            return _control(WINDOW_UPDATE, 0, _stream_id(frame.stream_id) + struct.pack(">I", frame.delta))
        if isinstance(frame, UnknownFrame):
            return _control(frame.type, frame.flags, frame.data)
        raise TypeError(f"not a SPDY frame: {frame!r}")

    # -- receiving ----------------------------------------------------------------------------------------

    def feed(self, data: bytes | bytearray) -> list[Frame]:
        """Every frame complete in what has arrived so far (a partial frame waits for more bytes)."""
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= 8:
            length = int.from_bytes(self._buffer[5:8], "big")
            if len(self._buffer) < 8 + length:
                break
            head = bytes(self._buffer[:8])
            payload = bytes(self._buffer[8 : 8 + length])
            del self._buffer[: 8 + length]
            frames.append(self._decode(head, payload))
        return frames

    def _decode(self, head: bytes, payload: bytes) -> Frame:
        first, flags = struct.unpack(">I", head[:4])[0], head[4]
        if not first & 0x80000000:
            return DataFrame(first & MAX_STREAM_ID, payload, bool(flags & FLAG_FIN))
        version, type_ = (first >> 16) & 0x7FFF, first & 0xFFFF
        if version != VERSION:
            raise SpdyError(f"SPDY version {version} is not supported (only {VERSION})")

        def need(size: int) -> None:
            if len(payload) < size:
                raise SpdyError(f"control frame type {type_} too short ({len(payload)} bytes)")

        def word(offset: int) -> int:
            return int(struct.unpack(">I", payload[offset : offset + 4])[0])

        fin = bool(flags & FLAG_FIN)
        if type_ == SYN_STREAM:
            need(10)
            headers = self._decompressor.decompress(payload[10:])
            return SynStream(
                word(0) & MAX_STREAM_ID,
                headers,
                associated_to=word(4) & MAX_STREAM_ID,
                priority=payload[8] >> 5,
                fin=fin,
                unidirectional=bool(flags & FLAG_UNIDIRECTIONAL),
            )
        if type_ in (SYN_REPLY, HEADERS):
            need(4)
            headers = self._decompressor.decompress(payload[4:])
            cls = SynReply if type_ == SYN_REPLY else HeadersFrame
            return cls(word(0) & MAX_STREAM_ID, headers, fin)
        if type_ == RST_STREAM:
            need(8)
            return RstStream(word(0) & MAX_STREAM_ID, word(4))
        if type_ == SETTINGS:
            need(4)
            count = word(0)
            need(4 + 8 * count)
            values = {word(4 + 8 * i) & 0xFFFFFF: word(8 + 8 * i) for i in range(count)}
            return Settings(values, clear=bool(flags & FLAG_SETTINGS_CLEAR_SETTINGS))
        if type_ == PING:
            need(4)
            return Ping(word(0))
        if type_ == GOAWAY:
            need(4)
            return GoAway(word(0) & MAX_STREAM_ID, word(4) if len(payload) >= 8 else GOAWAY_OK)
        if type_ == WINDOW_UPDATE:
            need(8)
            return WindowUpdate(word(0) & MAX_STREAM_ID, word(4) & MAX_STREAM_ID)
        return UnknownFrame(type_, flags, payload)

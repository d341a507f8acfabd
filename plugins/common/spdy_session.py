"""A SPDY/3.1 connection on a trio stream (either end), built on the pure codec in :mod:`spdy`.

:class:`SpdyConnection` reads frames in :meth:`SpdyConnection.run` (start it in a nursery), answers PINGs,
hands streams the peer opens to :meth:`accept`, and writes through one writer task, so a cancelled sender
never leaves half a frame on the wire. Flow control is SPDY/3.1's: we announce our 64 KiB stream window
in a SETTINGS frame and give credit back with WINDOW_UPDATE (stream and session) as the application consumes
data. Our own sends are held to the peer's windows once the peer shows it keeps them (it sent SETTINGS with
an initial window or any WINDOW_UPDATE); moby/spdystream, which kubectl, kube-apiserver and kubelet use,
does neither and never grants credit, so with it data flows unthrottled, as between those programs.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Any

import trio

from . import spdy

__all__ = ["SpdyConnection", "SpdyStream"]

log = logging.getLogger("kubeedge.spdy")

CHUNK = 16384  # the largest data frame we send
RECEIVE_LIMIT = 4 * 1024 * 1024  # bytes a stream may have waiting before the reader waits for its consumer


class SpdyStream:
    """One stream: ``headers`` are the SYN_STREAM's; receive with :meth:`receive_some` (b"" at the peer's FIN)."""

    def __init__(self, conn: SpdyConnection, stream_id: int, headers: spdy.Headers) -> None:
        self.conn = conn
        self.id = stream_id
        self.headers = headers
        self.replied = trio.Event()
        self.reply_headers: spdy.Headers = []
        self.remote_closed = False  # the peer sent FIN (or reset)
        self.local_closed = False  # we sent FIN (or reset)
        self.reset = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._readable = trio.Event()
        self._drained = trio.Event()
        self._unacked = 0  # consumed bytes not yet given back with WINDOW_UPDATE
        self.send_window = conn.peer_initial_window
        self.receive_window = conn.initial_window

    def header(self, name: str, default: str = "") -> str:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), default)

    # -- receiving ------------------------------------------------------------------------------------

    def _deliver(self, data: bytes, fin: bool) -> None:
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
        if fin:
            self.remote_closed = True
        self._readable.set()

    async def receive_some(self) -> bytes:
        """The next data the peer sent on this stream; b"" once it has finished (FIN or reset)."""
        while not self._chunks:
            if self.remote_closed:
                return b""
            self._readable = trio.Event()
            await self._readable.wait()
        data = self._chunks.popleft()
        self._buffered -= len(data)
        if self._buffered < RECEIVE_LIMIT:
            self._drained.set()
        self._unacked += len(data)
        if self._unacked >= self.conn.initial_window // 2 and not self.remote_closed:
            delta, self._unacked = self._unacked, 0
            self.receive_window += delta
            self.conn._queue(spdy.WindowUpdate(self.id, delta))
        self.conn._consumed(len(data))
        return data

    async def receive_all(self) -> bytes:
        out = bytearray()
        while data := await self.receive_some():
            out += data
        return bytes(out)

    # -- sending --------------------------------------------------------------------------------------

    async def reply(self, headers: spdy.Headers | None = None, *, fin: bool = False) -> None:
        await self.conn._send(spdy.SynReply(self.id, headers or [], fin))
        if fin:
            self.local_closed = True

    async def send(self, data: bytes, *, fin: bool = False) -> None:
        """Data on the stream, in frames the peer's windows allow; dropped when the stream was reset."""
        conn = self.conn
        view = memoryview(data)
        while view:
            if self.reset or self.local_closed:
                return
            size = min(len(view), CHUNK)
            if conn.peer_flow_control:
                while min(self.send_window, conn.send_window) <= 0 and not self.reset:
                    await conn._window_changed_wait()
                if self.reset:
                    return
                size = min(size, self.send_window, conn.send_window)
            self.send_window -= size
            conn.send_window -= size
            last = size == len(view)
            await conn._send(spdy.DataFrame(self.id, bytes(view[:size]), fin and last))
            view = view[size:]
        if fin and not data and not self.reset and not self.local_closed:
            await conn._send(spdy.DataFrame(self.id, b"", True))
        if fin:
            self.local_closed = True

    async def close(self) -> None:
        """Half-close: FIN on our side (once)."""
        if not self.local_closed and not self.reset:
            self.local_closed = True
            await self.conn._send(spdy.DataFrame(self.id, b"", True))

    async def send_reset(self, status: int = spdy.CANCEL) -> None:
        if not self.reset:
            self.reset = self.local_closed = self.remote_closed = True
            self._readable.set()
            await self.conn._send(spdy.RstStream(self.id, status))


class SpdyConnection:
    """``server``: which stream ids are ours (the client's are odd, the server's even)."""

    def __init__(self, stream: trio.abc.Stream, *, server: bool, name: str = "spdy") -> None:
        self.transport = stream
        self.server = server
        self.name = name
        self.codec = spdy.Codec()
        self.streams: dict[int, SpdyStream] = {}
        self.initial_window = spdy.DEFAULT_WINDOW
        self.peer_initial_window = spdy.DEFAULT_WINDOW
        self.send_window = spdy.DEFAULT_WINDOW  # the peer's session window for our data
        self.peer_flow_control = False
        self.goaway_received = False
        self.window_violations = 0  # data frames beyond the window we granted (a peer without flow control)
        self.goaway_sent = False
        self.closed = trio.Event()  # the peer's side of the transport ended
        self._next_id = 2 if server else 1
        self._last_peer_id = 0
        self._session_unacked = 0
        self._window_changed = trio.Event()
        self._incoming_send, self._incoming = trio.open_memory_channel[SpdyStream](math.inf)
        self._outbox_send, self._outbox = trio.open_memory_channel[Any](64)
        self._ping_id = 2 if server else 1
        self._pings: dict[int, trio.Event] = {}

    # -- running ------------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read and write until the peer's side ends (``closed`` is then set); cancel to stop early."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer)
            await self._send(spdy.Settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: self.initial_window}))
            task_status.started()
            try:
                await self._reader()
            finally:
                self.closed.set()
                self._incoming_send.close()
                for stream in list(self.streams.values()):
                    stream.remote_closed = True
                    stream._readable.set()
                self._window_changed.set()
            # the peer is gone: nothing queued can reach it now
            nursery.cancel_scope.cancel()
            self._outbox_send.close()

    async def _reader(self) -> None:
        while True:
            try:
                data = await self.transport.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            try:
                frames = self.codec.feed(data)
            except spdy.SpdyError as exc:
                log.warning("%s: protocol error from the peer: %s", self.name, exc)
                self._queue(spdy.GoAway(self._last_peer_id, spdy.GOAWAY_PROTOCOL_ERROR))
                return
            for frame in frames:
                await self._handle(frame)

    async def _writer(self) -> None:
        async for frame in self._outbox:
            if isinstance(frame, _Marker):
                frame.event.set()
                continue
            try:
                await self.transport.send_all(self.codec.encode(frame))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.closed.set()
                return

    async def _send(self, frame: Any) -> None:
        try:
            await self._outbox_send.send(frame)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def _queue(self, frame: Any) -> None:
        """Send without waiting (control frames from the reader, which must not block on the writer)."""
        try:
            self._outbox_send.send_nowait(frame)
        except trio.WouldBlock:
            # the outbox is full of data: one task per frame keeps the order of control frames loose but safe
            trio.lowlevel.spawn_system_task(self._send, frame)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    async def _window_changed_wait(self) -> None:
        if self.closed.is_set():
            raise trio.BrokenResourceError(f"{self.name}: connection closed")
        self._window_changed = trio.Event()
        await self._window_changed.wait()

    def _consumed(self, size: int) -> None:
        self._session_unacked += size
        if self._session_unacked >= self.initial_window // 2:
            delta, self._session_unacked = self._session_unacked, 0
            self._queue(spdy.WindowUpdate(0, delta))

    async def _handle(self, frame: spdy.Frame) -> None:
        if isinstance(frame, spdy.DataFrame):
            stream = self.streams.get(frame.stream_id)
            if stream is None or stream.remote_closed:
                if frame.stream_id and not (stream is not None and stream.reset):
                    self._queue(spdy.RstStream(frame.stream_id, spdy.INVALID_STREAM))
                self._consumed(len(frame.data))
                return
            stream.receive_window -= len(frame.data)
            if stream.receive_window < 0:
                self.window_violations += 1
                log.debug("%s: stream %d: the peer overran its window", self.name, stream.id)
            stream._deliver(frame.data, frame.fin)
            while stream._buffered >= RECEIVE_LIMIT and not stream.reset:
                stream._drained = trio.Event()
                await stream._drained.wait()
        elif isinstance(frame, spdy.SynStream):
            await self._on_syn_stream(frame)
        elif isinstance(frame, spdy.SynReply):
            stream = self.streams.get(frame.stream_id)
            if stream is not None:
                stream.reply_headers = frame.headers
                stream.replied.set()
                if frame.fin:
                    stream._deliver(b"", True)
        elif isinstance(frame, spdy.HeadersFrame):
            stream = self.streams.get(frame.stream_id)
            if stream is not None and frame.fin:
                stream._deliver(b"", True)
        elif isinstance(frame, spdy.RstStream):
            stream = self.streams.get(frame.stream_id)
            if stream is not None:
                stream.reset = stream.remote_closed = stream.local_closed = True
                stream._readable.set()
                stream.replied.set()
                self._window_changed.set()
        elif isinstance(frame, spdy.Settings):
            window = frame.values.get(spdy.SETTINGS_INITIAL_WINDOW_SIZE)
            if window is not None:
                self.peer_flow_control = True
                for stream in self.streams.values():
                    stream.send_window += window - self.peer_initial_window
                self.peer_initial_window = window
                self._window_changed.set()
        elif isinstance(frame, spdy.Ping):
            if (frame.ping_id % 2 == 0) == self.server:  # the answer to one of ours
                event = self._pings.pop(frame.ping_id, None)
                if event is not None:
                    event.set()
            else:
                self._queue(frame)
        elif isinstance(frame, spdy.GoAway):
            self.goaway_received = True
        elif isinstance(frame, spdy.WindowUpdate):
            self.peer_flow_control = True
            if frame.stream_id == 0:
                self.send_window += frame.delta
            elif (stream := self.streams.get(frame.stream_id)) is not None:
                stream.send_window += frame.delta
            self._window_changed.set()
        # unknown control frames are ignored, as the spec says

    async def _on_syn_stream(self, frame: spdy.SynStream) -> None:
        ours = (frame.stream_id % 2 == 0) == self.server
        if ours or frame.stream_id <= self._last_peer_id:
            self._queue(spdy.RstStream(frame.stream_id, spdy.PROTOCOL_ERROR))
            return
        self._last_peer_id = frame.stream_id
        if self.goaway_sent:
            self._queue(spdy.RstStream(frame.stream_id, spdy.REFUSED_STREAM))
            return
        stream = SpdyStream(self, frame.stream_id, frame.headers)
        if frame.fin:
            stream.remote_closed = True
        if frame.unidirectional:
            stream.local_closed = True
        self.streams[frame.stream_id] = stream
        self._incoming_send.send_nowait(stream)

    # -- the application's side ------------------------------------------------------------------------

    async def accept(self) -> SpdyStream | None:
        """The next stream the peer opened; None once the connection has ended."""
        try:
            return await self._incoming.receive()
        except trio.EndOfChannel:
            return None

    async def open_stream(self, headers: spdy.Headers, *, fin: bool = False, wait_reply: bool = True) -> SpdyStream:
        if self.goaway_received or self.closed.is_set():
            raise trio.BrokenResourceError(f"{self.name}: the peer said GOAWAY or the connection ended")
        stream = SpdyStream(self, self._next_id, headers)
        self._next_id += 2
        self.streams[stream.id] = stream
        if fin:
            stream.local_closed = True
        await self._send(spdy.SynStream(stream.id, headers, fin=fin))
        if wait_reply:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:

                    async def on_close() -> None:
                        await self.closed.wait()
                        scope.cancel()

                    nursery.start_soon(on_close)
                    await stream.replied.wait()
                    nursery.cancel_scope.cancel()
            if scope.cancelled_caught or stream.reset:
                raise trio.BrokenResourceError(f"{self.name}: stream {stream.id} was refused")
        return stream

    async def ping(self) -> None:
        ping_id, self._ping_id = self._ping_id, self._ping_id + 2
        event = self._pings[ping_id] = trio.Event()
        await self._send(spdy.Ping(ping_id))
        await event.wait()

    async def goaway(self, status: int = spdy.GOAWAY_OK) -> None:
        if not self.goaway_sent:
            self.goaway_sent = True
            await self._send(spdy.GoAway(self._last_peer_id, status))

    async def flush(self) -> None:
        """Wait until every frame queued so far has been written (a PING round trip would also prove receipt)."""
        done = trio.Event()
        await self._send(_Marker(done))
        with trio.move_on_after(10):
            await done.wait()


class _Marker:
    def __init__(self, event: trio.Event) -> None:
        self.event = event

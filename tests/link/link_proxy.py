"""A TCP proxy for fault tests: forwards bytes, and on demand cuts, stalls or half-opens the link."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import trio


@dataclass(eq=False)
class _Pair:
    client: trio.SocketStream
    upstream: trio.SocketStream
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    zombie: bool = False


class Proxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.pairs: list[_Pair] = []
        self.flowing = trio.Event()
        self.flowing.set()
        self.connections = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        while True:
            await self.flowing.wait()
            data = await source.receive_some(65536)
            if not data:
                await sink.send_eof()
                return
            await self.flowing.wait()  # a stall holds what was read, as a congested network would
            await sink.send_all(data)

    async def _handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        try:
            upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            await client.aclose()
            return
        pair = _Pair(client, upstream)
        self.pairs.append(pair)
        try:
            with pair.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump_guarded, client, upstream)
                    nursery.start_soon(self._pump_guarded, upstream, client)
        finally:
            if pair in self.pairs:
                self.pairs.remove(pair)
            await trio.aclose_forcefully(upstream)
        if pair.zombie:
            await trio.sleep_forever()  # the edge's end stays open and unread: its bytes vanish

    async def _pump_guarded(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        try:
            await self._pump(source, sink)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    def cut(self) -> None:
        """Reset every connection (both ends see the link die)."""
        for pair in list(self.pairs):
            for stream in (pair.client, pair.upstream):
                stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            pair.scope.cancel()

    def stall(self) -> None:
        """Stop moving bytes; connections stay open."""
        self.flowing = trio.Event()

    def resume(self) -> None:
        self.flowing.set()

    def half_open(self) -> None:
        """Drop the cloud side; the edge's socket stays open and its bytes vanish."""
        for pair in list(self.pairs):
            pair.zombie = True
            pair.upstream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            pair.scope.cancel()


@asynccontextmanager
async def run_proxy(target_port: int) -> AsyncIterator[Proxy]:
    proxy = Proxy(target_port)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, proxy._handle, 0, host="127.0.0.1"))
        proxy.port = listeners[0].socket.getsockname()[1]
        try:
            yield proxy
        finally:
            proxy.resume()
            nursery.cancel_scope.cancel()

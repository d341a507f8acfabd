"""The `kvline` driver: one object per device; the SDK calls prepare, connect, read/write, close.

This skeleton speaks a line protocol over TCP, one request per line, one answer per line:
``MGET k1 k2`` -> ``OK v1 v2``, ``GET k`` -> ``OK v``, ``SET k v`` -> ``OK``; errors are ``ERR reason``.
It is a trio driver (``flavor = "trio"``); a driver built on an asyncio library leaves ``flavor`` alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from kubeedge.mappers.sdk import DeviceUnreachable, Driver, Point, PointError


class KvlineDriver(Driver):
    protocol = "kvline"
    flavor = "trio"

    def __init__(self, device: Any) -> None:
        super().__init__(device)
        self.stream: trio.SocketStream | None = None
        self.buffer = b""

    def prepare(self, point: Point) -> str:
        key = str(point.config["key"])
        if " " in key:
            raise ValueError(f"key {key!r} contains a space")
        return key

    async def connect(self) -> None:
        host, port = self.config["host"], int(self.config["port"])
        try:
            self.stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise DeviceUnreachable(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None

    async def close(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
            self.stream = None

    async def _ask(self, line: str) -> list[str]:
        if self.stream is None:
            raise DeviceUnreachable("not connected")
        await self.stream.send_all(line.encode() + b"\n")
        while b"\n" not in self.buffer:
            data = await self.stream.receive_some(4096)
            if not data:
                raise DeviceUnreachable("the device closed the connection")
            self.buffer += data
        answer, _, self.buffer = self.buffer.partition(b"\n")
        words = answer.decode().split(" ")
        if words[0] == "ERR":
            raise PointError(" ".join(words[1:]) or "error")
        return words[1:]

    async def read(self, points: Sequence[Point]) -> list[Any]:
        if self.coalesce and len(points) > 1:
            try:  # the protocol reads many keys in one request
                return list(await self._ask("MGET " + " ".join(p.prepared for p in points)))
            except PointError:
                pass  # one bad key spoils the batch: ask one by one so only that point fails
        results: list[Any] = []
        for point in points:
            try:
                results.append((await self._ask(f"GET {point.prepared}"))[0])
            except PointError as exc:
                results.append(exc)
        return results

    async def write(self, writes: Sequence[tuple[Point, Any]]) -> list[PointError | None]:
        results: list[PointError | None] = []
        for point, value in writes:
            try:
                await self._ask(f"SET {point.prepared} {value}")
                results.append(None)
            except PointError as exc:
                results.append(exc)
        return results

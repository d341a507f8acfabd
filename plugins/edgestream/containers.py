"""What edgestream does with a pod's containers: find them, stream their logs, exec and attach.

Containers are found through the runtime edged uses (its class comes from the ``kubeedge_container_runtime``
hook), by the labels edged puts on them: kubelet's ``io.kubernetes.pod.namespace``, ``io.kubernetes.pod.name``,
``io.kubernetes.container.name``, and ``io.kubeedge.node`` (several nodes may share one podman).

Streaming goes past the runtime interface, which has only one-shot logs and exec: with a runtime that has a
Docker-compatible API socket (podman's ``socket_path``) logs are followed with ``GET /containers/{id}/logs``
and exec/attach use Docker's hijacked connection (``POST /exec/{id}/start`` with ``Upgrade: tcp``), whose
output is the multiplexed stream (8-byte frame headers) unless a TTY is attached. Other runtimes get the
one-shot forms.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import trio

from kubeedge.plugins.common.stream_protocol import (
    CHANNEL_CLOSE,
    CHANNEL_RESIZE,
    CHANNEL_STDERR,
    CHANNEL_STDIN,
    CHANNEL_STDOUT,
    ExecRequest,
    LogsRequest,
)

__all__ = ["ContainerNotFound", "Containers", "Demultiplexer"]

log = logging.getLogger("kubeedge.edgestream")

API = "/v1.41"
# kubelet's label names, which edged writes on every container it creates
LABEL_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_POD = "io.kubernetes.pod.name"
LABEL_CONTAINER = "io.kubernetes.container.name"
LABEL_RESTART_COUNT = "io.kubernetes.container.restartCount"
LABEL_NODE = "io.kubeedge.node"

BATCH_BYTES = 256 * 1024
Output = Callable[[int, bytes], Awaitable[None]]  # (channel, bytes) back to the cloud


class ContainerNotFound(Exception):
    def __init__(self, message: str, code: int = 404) -> None:
        super().__init__(message)
        self.code = code


class Demultiplexer:
    """Docker's multiplexed stream, fed in arbitrary pieces: yields (stream id, bytes) as frames complete."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buffer += data
        out = []
        while len(self.buffer) >= 8:
            stream = self.buffer[0]
            (length,) = struct.unpack(">I", self.buffer[4:8])
            if len(self.buffer) < 8 + length:
                break
            out.append((stream, bytes(self.buffer[8 : 8 + length])))
            del self.buffer[: 8 + length]
        return out


class Containers:
    def __init__(self, runtime: Any, node: str) -> None:
        self.runtime = runtime
        self.node = node

    @property
    def socket(self) -> str | None:
        path = getattr(self.runtime, "socket_path", None)
        return str(path) if path else None

    async def find(self, namespace: str, pod: str, container: str, *, previous: bool = False) -> Any:
        labels = {LABEL_NAMESPACE: namespace, LABEL_POD: pod, LABEL_CONTAINER: container, LABEL_NODE: self.node}
        found = await self.runtime.list_containers(labels)
        if not found:
            raise ContainerNotFound(
                f'container "{container}" in pod "{pod}" (namespace {namespace}) is not on node {self.node}'
            )

        def order(status: Any) -> tuple[int, int]:
            try:
                restarts = int(status.labels.get(LABEL_RESTART_COUNT, "0"))
            except ValueError:
                restarts = 0
            return restarts, 1 if status.state == "running" else 0

        found.sort(key=order, reverse=True)
        if previous:
            if len(found) < 2:
                raise ContainerNotFound(
                    f'previous terminated container "{container}" in pod "{pod}" not found', code=400
                )
            return found[1]
        return found[0]

    # -- logs -------------------------------------------------------------------------------------------

    async def logs(self, request: LogsRequest, container_id: str, output: Output) -> None:
        if self.socket is None:
            text = await self.runtime.container_logs(container_id, tail=request.tail_lines)
            await output(CHANNEL_STDOUT, _limit(text.encode(), request.limit_bytes))
            return
        params: dict[str, Any] = {"stdout": 1, "stderr": 1, "follow": int(request.follow)}
        if request.tail_lines is not None:
            params["tail"] = max(0, request.tail_lines)
        if request.timestamps:
            params["timestamps"] = 1
        if request.since_seconds:
            params["since"] = _since(request.since_seconds)
        tty = await self._tty(container_id)
        demux = Demultiplexer()
        # podman sends a chunk per log line; the reader queues them and the sender takes everything queued
        # at once, so a tunnel message carries as much as has arrived while the previous one was sent
        queue_in, queue_out = trio.open_memory_channel[bytes](4096)

        left = request.limit_bytes
        # HTTP/1.0: podman then writes the body as it comes, unchunked, until it closes; with HTTP/1.1 each
        # log line is a chunk of its own and parsing them costs more than everything else on the way
        target = f"{API}/containers/{container_id}/logs?{urlencode(params)}"
        async with _RawRequest(self.socket, "GET", target, None, upgrade=False) as (stream, leftover):

            async def read() -> None:
                async with queue_in:
                    if leftover:
                        await queue_in.send(leftover)
                    while data := await stream.receive_some(BATCH_BYTES):
                        await queue_in.send(data)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                async for first in queue_out:
                    batch, size = [first], len(first)
                    while size < BATCH_BYTES:
                        try:
                            piece = queue_out.receive_nowait()
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                        batch.append(piece)
                        size += len(piece)
                    raw = b"".join(batch)
                    data = raw if tty else b"".join(piece for _, piece in demux.feed(raw))
                    if left is not None:
                        data = data[:left]
                        left -= len(data)
                    if data:
                        await output(CHANNEL_STDOUT, data)
                    if left is not None and left <= 0:
                        break
                nursery.cancel_scope.cancel()

    async def _tty(self, container_id: str) -> bool:
        reply = await self.runtime.client.get(f"/containers/{container_id}/json")
        return reply.status_code == 200 and bool((reply.json().get("Config") or {}).get("Tty"))

    # -- exec / attach ----------------------------------------------------------------------------------

    async def exec(
        self, request: ExecRequest, container_id: str, inbound: trio.MemoryReceiveChannel[bytes], output: Output
    ) -> int:
        """Run the command with the client's streams attached; its exit code."""
        if self.socket is None:
            code, out = await self.runtime.exec_in_container(container_id, request.command, 3600)
            await output(CHANNEL_STDOUT, out)
            return int(code)
        client = self.runtime.client
        body = {
            "Cmd": request.command,
            "AttachStdin": request.stdin,
            "AttachStdout": request.stdout,
            "AttachStderr": request.stderr,
            "Tty": request.tty,
        }
        reply = await client.post(f"/containers/{container_id}/exec", json=body)
        if reply.status_code >= 400:
            raise ContainerNotFound(f"exec in {container_id[:12]}: {_message(reply)}", code=reply.status_code)
        exec_id = reply.json()["Id"]
        start = {"Detach": False, "Tty": request.tty}
        async with _hijack(self.socket, f"{API}/exec/{exec_id}/start", start) as (stream, leftover):
            await self._relay(stream, leftover, request.tty, inbound, output, f"/exec/{exec_id}/resize")
        for _ in range(200):  # the process is gone once its output ends; podman records the code right after
            reply = await client.get(f"/exec/{exec_id}/json")
            data = reply.json() if reply.status_code == 200 else {}
            if not data.get("Running"):
                code = data.get("ExitCode")
                return int(code) if code is not None else -1
            await trio.sleep(0.01)
        return -1

    async def attach(
        self, request: ExecRequest, container_id: str, inbound: trio.MemoryReceiveChannel[bytes], output: Output
    ) -> int:
        if self.socket is None:
            raise ContainerNotFound(f"runtime {self.runtime.name!r} cannot attach", code=400)
        tty = await self._tty(container_id)
        query = f"stream=1&stdin={int(request.stdin)}&stdout={int(request.stdout)}&stderr={int(request.stderr)}"
        async with _hijack(self.socket, f"{API}/containers/{container_id}/attach?{query}", None) as (stream, leftover):
            await self._relay(stream, leftover, tty, inbound, output, f"/containers/{container_id}/resize")
        reply = await self.runtime.client.get(f"/containers/{container_id}/json")
        state = reply.json().get("State", {}) if reply.status_code == 200 else {}
        return 0 if state.get("Running") else int(state.get("ExitCode") or 0)

    async def _relay(
        self,
        stream: trio.SocketStream,
        leftover: bytes,
        tty: bool,
        inbound: trio.MemoryReceiveChannel[bytes],
        output: Output,
        resize_path: str,
    ) -> None:
        client = self.runtime.client
        demux = Demultiplexer()

        async def emit(data: bytes) -> None:
            if tty:
                await output(CHANNEL_STDOUT, data)
                return
            # consecutive frames of one stream go out as one message
            run_channel, run = -1, bytearray()
            for stream_id, piece in demux.feed(data):
                channel = CHANNEL_STDERR if stream_id == 2 else CHANNEL_STDOUT
                if channel != run_channel and run:
                    await output(run_channel, bytes(run))
                    run.clear()
                run_channel = channel
                run += piece
            if run:
                await output(run_channel, bytes(run))

        async def pump_input() -> None:
            async for data in inbound:
                channel, payload = data[0], data[1:]
                if channel == CHANNEL_STDIN and payload:
                    await stream.send_all(payload)
                elif channel == CHANNEL_RESIZE:
                    try:
                        size = json.loads(payload)
                        params = {"h": int(size.get("Height", 0)), "w": int(size.get("Width", 0))}
                        await client.post(resize_path, params=params)
                    except (ValueError, AttributeError, TypeError) as exc:
                        log.debug("edgestream: bad resize %r: %r", payload, exc)
                elif channel == CHANNEL_CLOSE and payload[:1] == bytes([CHANNEL_STDIN]):
                    try:
                        await stream.send_eof()
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump_input)
            if leftover:
                await emit(leftover)
            while True:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not data:
                    break
                await emit(data)
            nursery.cancel_scope.cancel()


class _HijackError(Exception):
    pass


class _RawRequest:
    """One HTTP request on its own connection to the runtime's socket, handing over the raw stream after the
    response head: a hijacked exec/attach (``Upgrade: tcp``) or an unchunked HTTP/1.0 body."""

    def __init__(self, socket: str, method: str, target: str, body: Any, *, upgrade: bool = True) -> None:
        self.socket, self.method, self.target, self.body, self.upgrade = socket, method, target, body, upgrade
        self.stream: trio.SocketStream | None = None

    async def __aenter__(self) -> tuple[trio.SocketStream, bytes]:
        stream = await trio.open_unix_socket(self.socket)
        self.stream = stream
        payload = json.dumps(self.body).encode() if self.body is not None else b""
        if self.upgrade:
            head = (
                f"{self.method} {self.target} HTTP/1.1\r\nHost: podman\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
            )
        else:
            head = f"{self.method} {self.target} HTTP/1.0\r\nHost: podman\r\n\r\n"
        await stream.send_all(head.encode() + payload)
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            data = await stream.receive_some(65536)
            if not data:
                raise ContainerNotFound(f"the runtime closed {self.target} before answering", code=500)
            buffer += data
        header, _, rest = buffer.partition(b"\r\n\r\n")
        status_line = header.split(b"\r\n", 1)[0].decode(errors="replace")
        parts = status_line.split(" ", 2)
        code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 500
        if code not in (101, 200):
            while len(rest) < 65536 and (more := await stream.receive_some(65536)):
                rest += more
            raise ContainerNotFound(f"{self.target}: {status_line}: {rest.decode(errors='replace').strip()}", code=code)
        return stream, rest

    async def __aexit__(self, *exc: object) -> None:
        if self.stream is not None:
            await trio.aclose_forcefully(self.stream)


def _hijack(socket: str, target: str, body: Any) -> _RawRequest:
    return _RawRequest(socket, "POST", target, body)


def _message(reply: Any) -> str:
    try:
        return str(reply.json().get("message") or reply.text)
    except ValueError:
        return str(reply.text)


def _limit(data: bytes, limit: int | None) -> bytes:
    return data if limit is None else data[:limit]


def _since(seconds: int) -> int:
    import time

    return int(time.time()) - int(seconds)

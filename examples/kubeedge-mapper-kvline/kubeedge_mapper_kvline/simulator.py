"""A simulated `kvline` device: a TCP server holding key/value pairs.

Run one with ``python -m kubeedge_mapper_kvline.simulator --port 7070 --set key=value``.
"""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

import trio


class Simulator:
    def __init__(self, values: dict[str, str] | None = None) -> None:
        self.values: dict[str, str] = dict(values or {})
        self.requests = 0

    def answer(self, line: str) -> str:
        self.requests += 1
        words = line.split(" ")
        if words[0] == "GET" and len(words) == 2:
            return f"OK {self.values[words[1]]}" if words[1] in self.values else f"ERR no such key {words[1]}"
        if words[0] == "MGET" and len(words) > 1:
            missing = [k for k in words[1:] if k not in self.values]
            if missing:
                return f"ERR no such key {missing[0]}"
            return "OK " + " ".join(self.values[k] for k in words[1:])
        if words[0] == "SET" and len(words) == 3:
            self.values[words[1]] = words[2]
            return "OK"
        return f"ERR bad request {line!r}"

    async def handle(self, stream: trio.SocketStream) -> None:
        buffer = b""
        async with stream:
            while True:
                data = await stream.receive_some(4096)
                if not data:
                    return
                buffer += data
                while b"\n" in buffer:
                    line, _, buffer = buffer.partition(b"\n")
                    await stream.send_all(self.answer(line.decode().strip()).encode() + b"\n")

    async def serve(self, port: int = 0, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve on 127.0.0.1; reports the bound port when listening."""
        async with trio.open_nursery() as nursery:
            listeners: Any = await nursery.start(partial(trio.serve_tcp, self.handle, port, host="127.0.0.1"))
            task_status.started(listeners[0].socket.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description="a simulated kvline device")
    parser.add_argument("--port", type=int, default=7070)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    simulator = Simulator(dict(item.split("=", 1) for item in args.set))
    trio.run(simulator.serve, args.port)


if __name__ == "__main__":
    main()

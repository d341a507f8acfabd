"""The ``metrics`` module: the node's numbers in Prometheus' text format, and ``kubeedge status``.

Serves ``GET /metrics`` (and ``/healthz``) on ``address:port`` (127.0.0.1:9091 by default, KubeEdge's monitor
port): node info, each module's state, bus message counts and queue depths, and everything modules record
through ``ctx.metrics`` (hub sessions and ACK latency, twin updates, mapper polls, broker messages...).
``kubeedge status`` reads that endpoint and prints a short summary.
"""

from __future__ import annotations

import argparse
from typing import Any

import trio

from kubeedge import BaseModule, Context, hookimpl

MAX_REQUEST = 8192


class MetricsModule(BaseModule):
    name = "metrics"
    group = "metrics"

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.port: int | None = None

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        from .exposition import render

        address = self.config.get("address", "127.0.0.1")
        listeners = await trio.open_tcp_listeners(int(self.config.get("port", 9091)), host=address)
        self.port = listeners[0].socket.getsockname()[1]

        async def serve(stream: trio.SocketStream) -> None:
            async with stream:
                request = b""
                with trio.move_on_after(5):
                    while b"\r\n\r\n" not in request and len(request) < MAX_REQUEST:
                        chunk = await stream.receive_some(4096)
                        if not chunk:
                            return
                        request += chunk
                parts = request.split(b" ", 2)
                path = parts[1].decode("latin-1") if len(parts) > 2 else ""
                if parts[0] != b"GET":
                    status, body, kind = "405 Method Not Allowed", b"only GET\n", "text/plain"
                elif path.split("?")[0] == "/metrics":
                    status, body, kind = "200 OK", render(ctx), "text/plain; version=0.0.4; charset=utf-8"
                elif path == "/healthz":
                    status, body, kind = "200 OK", b"ok\n", "text/plain"
                else:
                    status, body, kind = "404 Not Found", b"try /metrics\n", "text/plain"
                head = (
                    f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n"
                )
                try:
                    await stream.send_all(head.encode() + body)
                except trio.BrokenResourceError:
                    pass

        task_status.started()
        await trio.serve_listeners(serve, listeners)


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "address": {"type": "string", "minLength": 1},
            "port": {"type": "integer", "minimum": 0, "maximum": 65535},
        },
    }


@hookimpl
def kubeedge_module(config: dict[str, Any]) -> MetricsModule:
    return MetricsModule(config)


@hookimpl
def kubeedge_cli_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("status", help="summarise a running node (from its metrics endpoint)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", help="the node's metrics URL (default http://127.0.0.1:9091/metrics)")
    where.add_argument("--profile", metavar="NAME|PATH", help="read the metrics address from this profile")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")

    def status(args: argparse.Namespace) -> int:
        from .exposition import status_command

        return status_command(args)

    parser.set_defaults(func=status)

"""The ``demo`` plugin: ``kubeedge demo`` (the all-in-one walk-through) and a ``demo`` module that serves a
simulated Modbus thermostat inside a node (see :mod:`.simulator` for its register map).
"""

from __future__ import annotations

import argparse
from typing import Any

import trio

from kubeedge import BaseModule, Context, hookimpl


class DemoDevice(BaseModule):
    """Serves the thermostat simulator on ``address:port`` for as long as the node runs."""

    name = "demo"
    group = "demo"

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.port: int | None = None

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        from .simulator import Thermostat

        thermostat = Thermostat(host=self.config.get("address", "127.0.0.1"), port=int(self.config.get("port", 5020)))
        async with trio.open_nursery() as nursery:
            self.port = await nursery.start(thermostat.run)
            task_status.started()


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
def kubeedge_module(config: dict[str, Any]) -> DemoDevice:
    return DemoDevice(config)


@hookimpl
def kubeedge_cli_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a cloud, an edge node joined over mutual TLS and a simulated Modbus thermostat, live",
        description="Starts the cloud (embedded Kubernetes API), joins one edge node with a token, serves a "
        "simulated Modbus thermostat, applies its DeviceModel and Device, and shows the device's twins live. "
        "Ctrl-C stops everything.",
    )
    parser.add_argument(
        "--data-dir", default="kubeedge-demo", help="where everything is written (default ./kubeedge-demo)"
    )
    parser.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    parser.add_argument("--node", default="edge-demo", help="the edge node's name")
    parser.add_argument("--plain", action="store_true", help="no live redrawing: print one line per change")

    def demo(args: argparse.Namespace) -> int:
        from .run import main

        return main(args)

    parser.set_defaults(func=demo)

"""The ``mappers`` edge module and the ``kubeedge mapper`` command.

The module hosts the mapper plugins a profile names under ``mappers:`` inside the edge process (small
nodes): one :class:`~kubeedge.mappers.sdk.runtime.Mapper` per plugin, each talking MQTT to the node's broker
exactly as a standalone mapper does (``broker``, default ``tcp://127.0.0.1:1884``), learning its devices
from the node's membership and from the ``devices`` files of its section.

``kubeedge mapper run PROTOCOL --broker mqtt://HOST:PORT --node NODE [--device FILE ...]`` runs the same
thing standalone, like a classic KubeEdge mapper next to edgecore; ``kubeedge mapper new NAME`` writes a
ready-to-install mapper package; ``kubeedge mapper list`` shows installed mapper drivers.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import trio

from kubeedge import BaseModule, Context, hookimpl

log = logging.getLogger("kubeedge.mappers.host")

DEFAULT_BROKER = "tcp://127.0.0.1:1884"

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "broker": {
            "type": "string",
            "minLength": 1,
            "description": "the node's MQTT broker (tcp://, mqtt://, mqtts://); default tcp://127.0.0.1:1884",
        },
        "membership": {"type": "boolean", "description": "learn devices from the node's membership (default true)"},
    },
}


class MappersModule(BaseModule):
    name = "mappers"
    group = "mappers"
    after = ("eventbus", "twin")

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        from kubeedge.mappers.sdk import load_device_files
        from kubeedge.mappers.sdk.runtime import Mapper
        from kubeedge.mappers.sdk.twin import membership_lists

        broker = self.config.get("broker") or DEFAULT_BROKER
        mappers = []
        for name, section in ctx.profile.mappers.items():
            spec = ctx.plugins.mapper_driver(name)
            mappers.append(
                Mapper(
                    [spec],
                    broker=broker,
                    node=ctx.node_name,
                    devices=load_device_files(section.get("devices") or []),
                    membership=self.config.get("membership", True),
                    coalesce=section.get("coalesce", True),
                    timeout=float(section.get("timeout", 5.0)),
                    client_id=f"kubeedge-{ctx.node_name}-mapper-{name}",
                    metrics=ctx.metrics,
                )
            )
        async with trio.open_nursery() as nursery:
            for mapper in mappers:
                await nursery.start(mapper.run)
            log.info(
                "node %s: mappers: hosting %s via %s",
                ctx.node_name,
                ", ".join(ctx.profile.mappers) or "no mapper plugins",
                broker,
            )
            task_status.started()
            async for message in ctx.bus.channel(self.name):
                content = _object(message.content)
                if message.resource in ("membership", "membership/detail") and content is not None:
                    # twin hands the cloud's membership (with full Device and DeviceModel objects) to us
                    # directly as well: devices are served even when MQTT replies carry ids only.
                    added, removed, full = membership_lists(content)
                    full = full and message.resource == "membership/detail"
                    for mapper in mappers:
                        mapper.apply_membership(added, removed, full)
                    continue
                # edgehub's link notices and anything else: the rest comes over MQTT.
                log.debug("node %s: mappers: ignoring %s %s", ctx.node_name, message.operation, message.resource)


def _object(content: Any) -> dict[str, Any] | None:
    if isinstance(content, (str, bytes)):
        import json

        try:
            content = json.loads(content)
        except ValueError:
            return None
    return content if isinstance(content, dict) else None


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    return CONFIG_SCHEMA


@hookimpl
def kubeedge_module(config: dict[str, Any]) -> MappersModule:
    return MappersModule(config)


@hookimpl
def kubeedge_cli_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("mapper", help="run a device mapper standalone, or start a new mapper package")
    actions = parser.add_subparsers(dest="mapper_command", metavar="ACTION", required=True)

    run = actions.add_parser("run", help="run a mapper over MQTT, as a classic KubeEdge mapper next to edgecore")
    run.add_argument("protocol", metavar="PROTOCOL", nargs="+", help="mapper plugin name(s), e.g. modbus")
    run.add_argument("--broker", default="tcp://127.0.0.1:1883", help="MQTT broker (default tcp://127.0.0.1:1883)")
    run.add_argument("--node", help="node name: learn devices from its membership (omit to serve --device only)")
    run.add_argument("--device", action="append", default=[], metavar="FILE", help="Device + DeviceModel YAML")
    run.add_argument("--no-coalesce", action="store_true", help="one request per point (for comparison)")
    run.add_argument("--timeout", type=float, default=5.0, help="seconds per driver call (default 5)")
    run.set_defaults(func=_cmd_run)

    new = actions.add_parser("new", help="write a ready-to-install mapper package (driver, schema, test)")
    new.add_argument("name", metavar="NAME", help="protocol name: lower-case letters, digits, '-' or '_'")
    new.add_argument("--dir", default=".", help="where to create kubeedge-mapper-NAME/ (default: here)")
    new.add_argument("--force", action="store_true", help="overwrite an existing directory")
    new.set_defaults(func=_cmd_new)

    listing = actions.add_parser("list", help="list installed mapper plugins and the protocols they serve")
    listing.set_defaults(func=_cmd_list)


def _cmd_run(args: argparse.Namespace) -> int:
    from .command import run_command

    return run_command(args)


def _cmd_new(args: argparse.Namespace) -> int:
    from .command import new_command

    return new_command(args)


def _cmd_list(args: argparse.Namespace) -> int:
    from .command import list_command

    return list_command(args)

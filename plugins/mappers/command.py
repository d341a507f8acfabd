"""``kubeedge mapper run | new | list``: the standalone mapper and the mapper package generator."""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
from importlib import resources
from pathlib import Path

import trio

log = logging.getLogger("kubeedge.mappers.host")

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,40}$")


def _error(message: str) -> int:
    print(f"kubeedge mapper: error: {message}", file=sys.stderr)
    return 2


def run_command(args: argparse.Namespace) -> int:
    from kubeedge import PluginError, Plugins
    from kubeedge.mappers.sdk import DeviceError, load_device_files, validate_device
    from kubeedge.mappers.sdk.mqtt import MqttError, parse_broker

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        parse_broker(args.broker)
        plugins = Plugins()
        specs = [plugins.mapper_driver(name) for name in args.protocol]
        devices = load_device_files(args.device)
    except (MqttError, DeviceError, PluginError) as exc:
        return _error(str(exc))
    served = []
    for device in devices:
        spec = next((s for s in specs if s.serves(device.protocol)), None)
        if spec is None:
            log.warning("device %s speaks %s, which no mapper here serves", device.id, device.protocol)
            continue
        try:
            validate_device(spec.schema, device)
        except DeviceError as exc:
            return _error(str(exc))
        served.append(device)
    if not served and not args.node:
        return _error("nothing to serve: give --device files for this protocol, or --node to use membership")

    async def main() -> None:
        import trio_asyncio

        from kubeedge.mappers.sdk.runtime import Mapper

        mapper = Mapper(
            specs,
            broker=args.broker,
            node=args.node,
            devices=served,
            coalesce=not args.no_coalesce,
            timeout=args.timeout,
        )
        async with trio_asyncio.open_loop() as loop:
            loop.set_exception_handler(_log_asyncio_error)
            async with trio.open_nursery() as nursery:
                await nursery.start(mapper.run)
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        log.info("%s: stopping the mapper", signal.Signals(signum).name)
                        break
                nursery.cancel_scope.cancel()

    trio.run(main)
    return 0


def _log_asyncio_error(loop: object, context: dict[str, object]) -> None:
    log.error("asyncio: %s (%s)", context.get("message", "error"), context.get("exception"))


def list_command(args: argparse.Namespace) -> int:
    from kubeedge import PluginError, Plugins
    from kubeedge.registry import installed

    plugins = Plugins()
    for info in installed("mapper"):
        try:
            spec = plugins.mapper_driver(info.name)
            extra = f" (also {', '.join(spec.aliases)})" if spec.aliases else ""
            print(f"{info.name}\t{info.distribution} {info.version}\t{spec.description or spec.protocol}{extra}")
        except PluginError as exc:
            print(f"{info.name}\t{info.distribution} {info.version}\tBROKEN: {exc}")
    return 0


# -- mapper new -----------------------------------------------------------------------------------------


def render(name: str) -> dict[str, str]:
    """The files of a new mapper package for protocol ``name``, by relative path."""
    package = "kubeedge_mapper_" + name.replace("-", "_")
    words = re.split(r"[-_]", name)
    values = {
        "{{name}}": name,
        "{{package}}": package,
        "{{dist}}": f"kubeedge-mapper-{name}",
        "{{Class}}": "".join(w.capitalize() for w in words) + "Driver",
    }
    files: dict[str, str] = {}
    for entry in resources.files("kubeedge.mappers.template").iterdir():
        if not entry.name.endswith(".tmpl"):
            continue
        text = entry.read_text()
        for key, value in values.items():
            text = text.replace(key, value)
        relative = entry.name.removesuffix(".tmpl").replace("+", "/")
        files[relative.replace("package/", f"{package}/", 1)] = text
    return files


def new_command(args: argparse.Namespace) -> int:
    name = args.name
    if not NAME.match(name):
        return _error(f"{name!r} is not a usable name: lower-case letters, digits, '-' or '_', starting with a letter")
    target = Path(args.dir) / f"kubeedge-mapper-{name}"
    if target.exists() and not args.force:
        return _error(f"{target} exists (use --force to overwrite)")
    for relative, text in render(name).items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"created {target}")
    print(f"  install:  pip install -e {target}")
    print(f"  test:     pytest {target}/tests")
    print(f"  run:      kubeedge mapper run {name} --broker tcp://127.0.0.1:1883 --device device.yaml")
    return 0

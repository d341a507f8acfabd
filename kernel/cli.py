"""The ``kubeedge``, ``cloudcore`` and ``edgecore`` commands.

Kernel commands: ``--version``, ``plugins``, ``profiles``, ``profile show``, ``check`` and ``run``. Any other
command comes from plugins (``kubeedge_cli_commands``): keadm, mapper and demo live there. A user error is
one line on stderr and exit status 2; a node that fails while running exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .profile import ProfileError, bundled_profiles, load_profile
from .registry import PluginError, Plugins, installed

__all__ = ["cloudcore_main", "edgecore_main", "main"]

KERNEL_COMMANDS = ("plugins", "profiles", "profile", "check", "run")
USAGE_ERROR = 2


class UsageError(Exception):
    """A mistake on the command line or in a file the user named: one line, exit 2, no traceback."""


def _profile_args(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument(
        "--profile",
        required=required,
        metavar="NAME|PATH",
        help="a bundled profile name (see `kubeedge profiles`) or a YAML file",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one profile value, e.g. modules.eventbus.mqttMode=0 (repeatable)",
    )
    parser.add_argument("--data-dir", metavar="DIR", help="the node's data directory (overrides dataDir)")


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[Any]]:
    parser = argparse.ArgumentParser(
        prog="kubeedge",
        description="KubeEdge's cloud and edge roles as one plugin-based microkernel.",
    )
    parser.add_argument("--version", action="version", version=f"kubeedge {__version__}")
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default: the profile's logLevel, else info)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("plugins", help="list installed plugins (modules and mappers)")
    p.add_argument("--json", action="store_true", help="print one JSON array")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("profiles", help="list the bundled profiles")
    p.set_defaults(func=cmd_profiles)

    p = sub.add_parser("profile", help="show a profile, resolved")
    profile_sub = p.add_subparsers(dest="profile_command", metavar="ACTION", required=True)
    show = profile_sub.add_parser("show", help="print the resolved YAML of a profile")
    show.add_argument("name", metavar="NAME|PATH")
    show.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")
    show.add_argument("--data-dir", metavar="DIR")
    show.set_defaults(func=cmd_profile_show)

    p = sub.add_parser("check", help="validate a profile and resolve its plugins without starting anything")
    _profile_args(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("run", help="run a node from a profile")
    _profile_args(p)
    p.set_defaults(func=cmd_run)
    return parser, sub


# -- commands -------------------------------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace) -> int:
    plugins = installed()
    if args.json:
        print(json.dumps([p.public() for p in plugins], indent=2))
        return 0
    if not plugins:
        print("no plugins installed")
        return 0
    rows = [("NAME", "KIND", "DISTRIBUTION", "VERSION")] + [
        (p.name, p.kind, p.distribution, p.version) for p in plugins
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    for name in bundled_profiles():
        print(name)
    return 0


def cmd_profile_show(args: argparse.Namespace) -> int:
    profile = load_profile(args.name, overrides=args.set, data_dir=args.data_dir)
    print(profile.to_yaml(), end="")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .kernel import resolve

    profile = load_profile(args.profile, overrides=args.set, data_dir=args.data_dir)
    _, modules = resolve(profile)
    print(f"profile {profile.source}: role {profile.role}, node {profile.node_name}, data dir {profile.data_dir}")
    print(f"modules in start order: {', '.join(m.name for m in modules) or 'none'}")
    if profile.mappers:
        print(f"mappers: {', '.join(profile.mappers)}")
    print("ok")
    return 0


def _cap_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives every thread that allocates its own malloc arena; a node's worker threads (the database,
    the broker's loop, trio's thread cache) then hold freed memory apart and RSS creeps up under steady
    load (bench/soak.py: the cloud 142 MB and rising after 4 min at 200 twin updates/s, 131 MB and flat
    with two arenas). ``MALLOC_ARENA_MAX`` in the environment wins; other C libraries are left alone."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc (musl has no arenas to cap)


def cmd_run(args: argparse.Namespace) -> int:
    import trio

    from .kernel import Kernel, KernelError

    profile = load_profile(args.profile, overrides=args.set, data_dir=args.data_dir)
    _configure_logging(args.log_level or profile.log_level)
    _cap_malloc_arenas()
    kernel = Kernel.from_profile(profile)
    try:
        trio.run(kernel.run)
    except KernelError as exc:
        print(f"kubeedge: {exc}", file=sys.stderr)
        return 1
    return 0


# -- entry points ---------------------------------------------------------------------------------------


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return USAGE_ERROR
    if args.log_level:
        _configure_logging(args.log_level)
    try:
        return int(func(args) or 0)
    except (ProfileError, PluginError, UsageError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, sub = build_parser()
    first = next((a for a in argv if not a.startswith("-")), None)
    if first is not None and first not in KERNEL_COMMANDS:
        # Not a kernel command: plugins may provide it. A broken plugin must not break the whole CLI.
        plugins = Plugins()
        errors = plugins.load_all()
        plugins.add_cli_commands(sub)
        if first not in sub.choices:
            for error in errors:
                print(f"kubeedge: warning: {error}", file=sys.stderr)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    from .kernel import KernelError

    try:
        return _dispatch(parser, args)
    except KernelError as exc:
        print(f"kubeedge: error: {exc}", file=sys.stderr)
        return USAGE_ERROR


def _core_main(role: str, argv: Sequence[str] | None) -> int:
    """``cloudcore`` / ``edgecore``: the KubeEdge commands, running this project's cloud or edge role."""
    prog = "cloudcore" if role == "cloud" else "edgecore"
    parser = argparse.ArgumentParser(prog=prog, description=f"Run the {role} role (KubeEdge's {prog}).")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--minconfig", action="store_true", help="print a minimal profile and exit")
    group.add_argument("--defaultconfig", action="store_true", help="print the full default profile and exit")
    group.add_argument(
        "--config", metavar="FILE", help=f"a profile, or KubeEdge's own {prog}.yaml (translated), to run"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")
    parser.add_argument("--data-dir", metavar="DIR")
    parser.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.minconfig or args.defaultconfig:
        import yaml

        from .profile import read_profile_text

        data = yaml.safe_load(read_profile_text(role)[1])
        if args.minconfig:
            # The same modules with every setting at its default: a starting point to edit.
            data = {
                "role": data["role"],
                "node": data.get("node", {}),
                "modules": {name: {} for name in data.get("modules", {})},
            }
        print(yaml.safe_dump(data, sort_keys=False), end="")
        return 0
    args.profile = args.config or role
    args.func = cmd_run
    return _dispatch(parser, args)


def cloudcore_main(argv: Sequence[str] | None = None) -> int:
    return _core_main("cloud", argv)


def edgecore_main(argv: Sequence[str] | None = None) -> int:
    return _core_main("edge", argv)

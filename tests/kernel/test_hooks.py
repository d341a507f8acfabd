"""One test per hookspec (tests/meta/test_hookspecs.py checks that none is missing)."""

from __future__ import annotations

import argparse
import types
from pathlib import Path
from typing import Any

import pytest

from kubeedge import PluginError, Plugins, hookimpl
from kubeedge.profile import build_profile


class Recorder:
    """The least a module needs: name, group, run."""

    def __init__(self, name: str, journal: list[str]) -> None:
        self.name = self.group = name

    async def run(self, ctx: Any, *, task_status: Any = None) -> None:
        raise NotImplementedError


def plugin(**hooks: Any) -> types.ModuleType:
    module = types.ModuleType("plugin")
    for name, fn in hooks.items():
        setattr(module, name, hookimpl(fn))
    return module


def test_hook_kubeedge_config_schema() -> None:
    plugins = Plugins()
    plugins.register("module", "a", plugin(kubeedge_config_schema=lambda: {"type": "object"}))
    plugins.register("module", "b", plugin(kubeedge_config_schema=lambda name: {"title": name}))
    plugins.register("module", "c", plugin())
    # Called per plugin: each answers for itself only, with fewer arguments than the spec if it likes.
    assert plugins.config_schema("module", "a") == {"type": "object"}
    assert plugins.config_schema("module", "b") == {"title": "b"}
    assert plugins.config_schema("module", "c") is None
    plugins.register("module", "bad", plugin(kubeedge_config_schema=lambda: ["not", "a", "dict"]))
    with pytest.raises(PluginError, match="'bad': kubeedge_config_schema must return a dict"):
        plugins.config_schema("module", "bad")


def test_hook_kubeedge_module(tmp_path: Path) -> None:
    profile = build_profile({"role": "edge", "modules": {"rec": {"x": 1}}}, data_dir=tmp_path)
    seen: dict[str, Any] = {}

    def kubeedge_module(name: str, config: dict[str, Any], profile: Any) -> Recorder:
        seen.update(name=name, config=config, node=profile.node_name)
        return Recorder(name, [])

    plugins = Plugins()
    plugins.register("module", "rec", plugin(kubeedge_module=kubeedge_module))
    plugins.register("module", "other", plugin(kubeedge_module=lambda: Recorder("other", [])))
    module = plugins.module("rec", {"x": 1}, profile)
    assert module.name == "rec"
    assert seen == {"name": "rec", "config": {"x": 1}, "node": "edge-node"}
    plugins.register("module", "junk", plugin(kubeedge_module=lambda: object()))
    with pytest.raises(PluginError, match="'junk' returned object, which lacks name, group or run"):
        plugins.module("junk", {}, profile)
    plugins.register("module", "silent", plugin())
    with pytest.raises(PluginError, match="'silent' implements no kubeedge_module hook"):
        plugins.module("silent", {}, profile)


def test_hook_kubeedge_mapper_driver() -> None:
    driver = object()
    plugins = Plugins()
    plugins.register("mapper", "toy", plugin(kubeedge_mapper_driver=lambda name: (name, driver)))
    assert plugins.mapper_driver("toy") == ("toy", driver)
    with pytest.raises(PluginError, match="mapper plugin is not installed: 'nonexistent'"):
        plugins.mapper_driver("nonexistent")


def test_hook_kubeedge_container_runtime() -> None:
    class Podman: ...

    class Fake: ...

    plugins = Plugins()
    plugins.register("module", "edged", plugin(kubeedge_container_runtime=lambda: {"podman": Podman}))
    plugins.register("module", "extra", plugin(kubeedge_container_runtime=lambda: {"fake": Fake}))
    plugins.register("module", "none", plugin(kubeedge_container_runtime=lambda: None))
    assert plugins.container_runtimes() == {"podman": Podman, "fake": Fake}


def test_hook_kubeedge_cli_commands() -> None:
    def add(subparsers: Any) -> None:
        p = subparsers.add_parser("greet")
        p.add_argument("who")
        p.set_defaults(func=lambda args: f"hi {args.who}")

    plugins = Plugins()
    plugins.register("module", "greeter", plugin(kubeedge_cli_commands=add))
    parser = argparse.ArgumentParser()
    plugins.add_cli_commands(parser.add_subparsers())
    args = parser.parse_args(["greet", "pi"])
    assert args.func(args) == "hi pi"


def test_an_entry_point_naming_a_class_is_refused() -> None:
    with pytest.raises(PluginError, match="names a class"):
        Plugins().register("module", "cls", Recorder)

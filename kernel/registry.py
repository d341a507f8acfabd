"""Finding, loading and calling plugins: stevedore selects, pluggy holds the contract.

Plugins are importable Python modules named by entry points in two groups, ``kubeedge.modules`` and
``kubeedge.mappers``. Built-in plugins come through the same groups. :class:`Plugins` is the only place
that calls hooks; the rest of the kernel asks it typed questions.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import logging
import types
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import pluggy

from . import hookspecs

if TYPE_CHECKING:
    from .module import Module
    from .profile import Profile

__all__ = ["MAPPER_GROUP", "MODULE_GROUP", "PluginError", "PluginInfo", "Plugins"]

log = logging.getLogger("kubeedge.plugins")

MODULE_GROUP = "kubeedge.modules"
MAPPER_GROUP = "kubeedge.mappers"
Kind = Literal["module", "mapper"]
GROUPS: dict[str, str] = {"module": MODULE_GROUP, "mapper": MAPPER_GROUP}


class PluginError(Exception):
    """A plugin that cannot be used: not installed, broken on import, or returning nonsense."""

    def __init__(self, message: str, name: str = "") -> None:
        super().__init__(message)
        self.name = name


@dataclass(frozen=True)
class PluginInfo:
    name: str
    kind: str
    distribution: str
    version: str
    value: str

    def public(self) -> dict[str, str]:
        info = asdict(self)
        del info["value"]
        return info


def installed(kind: Kind | None = None) -> list[PluginInfo]:
    """Every installed plugin, read from package metadata without importing anything."""
    found: dict[tuple[str, str], PluginInfo] = {}
    for each_kind, group in GROUPS.items():
        if kind is not None and each_kind != kind:
            continue
        for ep in metadata.entry_points(group=group):
            dist = getattr(ep, "dist", None)
            key = (each_kind, ep.name)
            if key in found:
                continue  # the same distribution seen twice on sys.path
            found[key] = PluginInfo(
                name=ep.name,
                kind=each_kind,
                distribution=dist.name if dist is not None else "?",
                version=dist.version if dist is not None else "?",
                value=ep.value,
            )
    return sorted(found.values(), key=lambda p: (p.kind, p.name))


def _forget_stevedore_scans() -> None:
    # stevedore also memoises its scan per sys.path inside the process (its on-disk cache is keyed on file
    # mtimes and stays valid). There is no public call for this; without it a plugin pip-installed into a
    # running process stays invisible.
    try:
        from stevedore import _cache

        _cache._c._internal.clear()
    except (ImportError, AttributeError):  # a stevedore without that cache has nothing to forget
        pass


class Plugins:
    """The plugin manager facade. Build one per command or per kernel run, never at import."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("kubeedge")
        self.pm.add_hookspecs(hookspecs)
        self.loaded: dict[tuple[str, str], types.ModuleType] = {}

    # -- loading --------------------------------------------------------------------------------------

    def load(self, kind: Kind, names: list[str]) -> None:
        """Load the named plugins of ``kind``, in order. Raises :class:`PluginError` on the first problem."""
        names = [n for n in names if (kind, n) not in self.loaded]
        if not names:
            return
        from stevedore import NamedExtensionManager

        available = {p.name: p for p in installed(kind)}
        missing = [n for n in names if n not in available]
        if missing:
            raise PluginError(self._not_installed(kind, missing, available), missing[0])
        failures: list[tuple[str, str, BaseException]] = []

        def on_failure(_manager: Any, entrypoint: Any, exc: BaseException) -> None:
            failures.append((entrypoint.name, entrypoint.value, exc))

        # stevedore keeps the entry points of a group for the life of the process; a distribution installed
        # since (or removed) would be missed silently, so the scan starts fresh for every load.
        NamedExtensionManager.ENTRY_POINT_CACHE.pop(GROUPS[kind], None)
        _forget_stevedore_scans()
        manager = NamedExtensionManager(
            GROUPS[kind],
            names=names,
            name_order=True,
            invoke_on_load=False,
            on_load_failure_callback=on_failure,
        )
        if failures:
            name, value, exc = failures[0]
            dist = available[name].distribution if name in available else "?"
            raise PluginError(
                f"{kind} plugin {name!r} (distribution {dist}, entry point {value}) failed to load:"
                f" {type(exc).__name__}: {exc}",
                name,
            )
        for ext in manager:
            self._register(kind, ext.name, ext.plugin)
        unseen = [n for n in names if (kind, n) not in self.loaded]
        if unseen:
            raise PluginError(f"stevedore did not load {kind} plugin(s) {', '.join(map(repr, unseen))}", unseen[0])

    def load_all(self) -> list[PluginError]:
        """Load every installed plugin, collecting failures instead of raising (for the command line)."""
        errors: list[PluginError] = []
        for info in installed():
            try:
                self.load(info.kind, [info.name])  # type: ignore[arg-type]
            except PluginError as exc:
                errors.append(exc)
        return errors

    def register(self, kind: Kind, name: str, plugin: types.ModuleType | object) -> None:
        """Register an object directly (tests, and hosts embedding the kernel)."""
        self._register(kind, name, plugin)

    def _register(self, kind: str, name: str, plugin: Any) -> None:
        if isinstance(plugin, type):
            raise PluginError(
                f"{kind} plugin {name!r} names a class; an entry point must name a module or an instance",
                name,
            )
        self.pm.register(plugin, name=f"{kind}:{name}")
        self.loaded[(kind, name)] = plugin

    @staticmethod
    def _not_installed(kind: str, missing: list[str], available: dict[str, PluginInfo]) -> str:
        which = ", ".join(repr(n) for n in missing)
        others = ", ".join(sorted(available)) or "none"
        noun = "plugin is" if len(missing) == 1 else "plugins are"
        return f"{kind} {noun} not installed: {which} (installed {kind} plugins: {others})"

    # -- hooks, per plugin ----------------------------------------------------------------------------

    def _call_one(self, kind: str, plugin_name: str, hook: str, **kwargs: Any) -> Any:
        plugin = self.loaded.get((kind, plugin_name))
        if plugin is None:
            raise PluginError(f"{kind} plugin {plugin_name!r} is not loaded", plugin_name)
        others = [p for key, p in self.loaded.items() if key != (kind, plugin_name)]
        caller = self.pm.subset_hook_caller(hook, remove_plugins=others)
        return caller(**kwargs)

    def config_schema(self, kind: Kind, name: str) -> dict[str, Any] | None:
        schema = self._call_one(kind, name, "kubeedge_config_schema", name=name)
        if schema is not None and not isinstance(schema, dict):
            raise PluginError(f"{kind} plugin {name!r}: kubeedge_config_schema must return a dict", name)
        return schema

    def module(self, name: str, config: dict[str, Any], profile: Profile) -> Module:
        from .module import Module

        module = self._call_one("module", name, "kubeedge_module", name=name, config=config, profile=profile)
        if module is None:
            raise PluginError(f"module plugin {name!r} implements no kubeedge_module hook", name)
        if not isinstance(module, Module):
            raise PluginError(
                f"module plugin {name!r} returned {type(module).__name__}, which lacks name, group or run", name
            )
        return module

    def mapper_driver(self, name: str) -> Any:
        self.load("mapper", [name])
        driver = self._call_one("mapper", name, "kubeedge_mapper_driver", name=name)
        if driver is None:
            raise PluginError(f"mapper plugin {name!r} implements no kubeedge_mapper_driver hook", name)
        return driver

    # -- hooks, all plugins ---------------------------------------------------------------------------

    def container_runtimes(self) -> dict[str, Any]:
        runtimes: dict[str, Any] = {}
        for result in reversed(self.pm.hook.kubeedge_container_runtime()):
            runtimes.update(result or {})
        return runtimes

    def add_cli_commands(self, subparsers: argparse._SubParsersAction[Any]) -> None:
        self.pm.hook.kubeedge_cli_commands(subparsers=subparsers)

"""Every hook a kubeedge plugin may implement, grouped by the phase that calls it.

Hooks are synchronous and cheap: they describe and construct; the work happens in a module's ``run``.
They are called with keyword arguments only, so an implementation may accept fewer parameters than the
spec lists (and specs can grow without breaking plugins). Implement one with::

    from kubeedge import hookimpl

    @hookimpl
    def kubeedge_module(config):
        return MyModule(config)

A plugin is an importable Python module named by an entry point in the ``kubeedge.modules`` or
``kubeedge.mappers`` group; the entry point's name is the plugin's name in profiles.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .module import Module
    from .profile import Profile

hookspec = pluggy.HookspecMarker("kubeedge")
hookimpl = pluggy.HookimplMarker("kubeedge")

# ---------------------------------------------------------------------------------------------------
# Configuration: called by `kubeedge check` and before `kubeedge run` starts anything.
# ---------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def kubeedge_config_schema(name: str) -> dict[str, Any] | None:
    """Return the JSON Schema of this plugin's section in a profile.

    Called once per plugin named in a profile, before any module starts; the profile's section
    (``modules.<name>`` or ``mappers.<name>``) is validated against it and a mismatch stops start-up with
    the path of the bad key.

    :param name: the plugin's entry-point name (the key of its section in the profile).
    :return: a JSON Schema (draft 2020-12) as a dict, or None to accept any object.
    """


# ---------------------------------------------------------------------------------------------------
# Start-up: called by the kernel runner, once per module named in the profile.
# ---------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def kubeedge_module(name: str, config: dict[str, Any], profile: Profile) -> Module | None:
    """Return the module this plugin contributes.

    Called once per run for each module plugin the profile names, in the profile's order, after the
    profile has been validated. One entry point is one module.

    :param name: the plugin's entry-point name.
    :param config: the plugin's profile section, already validated (``{}`` when the profile gives none).
    :param profile: the whole resolved profile (node name, role, data directory, other sections).
    :return: an object with ``name``, ``group`` and ``async def run(ctx, *, task_status)``; see
        :class:`kubeedge.Module`.
    """


@hookspec(firstresult=True)
def kubeedge_mapper_driver(name: str) -> Any:
    """Return this mapper plugin's driver.

    Called by whatever hosts mappers (the edge's ``mappers`` module, or ``kubeedge mapper run``) for each
    mapper plugin it uses.

    :param name: the mapper's entry-point name (its protocol name, e.g. ``modbus``).
    :return: a driver description as defined by :mod:`kubeedge.mappers.sdk` (driver class and the JSON
        Schema of its protocol ``configData``).
    """


@hookspec
def kubeedge_container_runtime() -> dict[str, Any] | None:
    """Return the container runtimes this plugin provides, by name.

    Called by edged when it starts, on every loaded plugin; the profile's ``modules.edged.runtime``
    picks one of the names.

    :return: a mapping from a runtime name (``podman``, ``cri``) to its class, or to an import path
        ``"package.module:Class"`` so that only the runtime a profile picks is ever imported; or None.
    """


# ---------------------------------------------------------------------------------------------------
# Command line: called by `kubeedge` when the first argument is not one of the kernel's own commands.
# ---------------------------------------------------------------------------------------------------


@hookspec
def kubeedge_cli_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add subcommands to the ``kubeedge`` command line.

    Called on every installed plugin when the command is not a kernel command. Each added parser must
    ``set_defaults(func=callable)``; the callable takes the parsed ``argparse.Namespace`` and returns an
    exit status. Import heavy libraries inside that callable, not at module import.

    :param subparsers: the ``kubeedge`` parser's subparsers action.
    """

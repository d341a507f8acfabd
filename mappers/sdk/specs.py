"""Protocol specs: the JSON Schemas of a protocol's ``configData``, and checking devices against them.

A spec is one JSON Schema whose two properties are ``protocol`` (``Device.spec.protocol.configData``) and
``visitor`` (each property visitor's ``configData``). Built-in specs live in ``protocol_specs/<name>.json``;
third-party mappers return theirs from ``kubeedge_mapper_driver``. The cloud side may call
:func:`validate_device` to refuse a Device before it reaches a node.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from .device import DeviceConfig, DeviceError
from .driver import DriverSpec

__all__ = ["SpecError", "check_device", "find_driver", "load_spec", "validate_config", "validate_device"]


class SpecError(DeviceError):
    """A configData that does not match its protocol's schema.

    ``path`` is the path of the bad field inside the object (``spec.protocol.configData.port``), ``reason``
    what is wrong with it, ``subject`` the object (``Device default/boiler``) when known.
    """

    def __init__(self, reason: str, path: str, subject: str = "") -> None:
        where = ": ".join(part for part in (subject, path) if part)
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason = reason
        self.path = path
        self.subject = subject


@cache
def load_spec(protocol: str) -> dict[str, Any]:
    """The bundled spec ``protocol_specs/<protocol>.json``."""
    resource = resources.files("kubeedge.protocol_specs").joinpath(f"{protocol}.json")
    if not resource.is_file():
        raise FileNotFoundError(f"no protocol spec named {protocol!r} in kubeedge.protocol_specs")
    spec: dict[str, Any] = json.loads(resource.read_text())
    return spec


def _part(spec: dict[str, Any], part: str) -> dict[str, Any]:
    schema = (spec.get("properties") or {}).get(part) or {}
    if "$defs" in spec and "$defs" not in schema:
        schema = {**schema, "$defs": spec["$defs"]}
    return schema


def validate_config(spec: dict[str, Any], part: str, config: Any, path: str, subject: str = "") -> None:
    """Validate one ``configData`` (``part`` is ``protocol`` or ``visitor``); raise :class:`SpecError`."""
    from kubeedge.schema import first_violation  # lean: no jsonschema import for the specs' keywords

    violation = first_violation(config, _part(spec, part))
    if violation is None:
        return
    where = path + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in violation.path)
    raise SpecError(violation.message, where, subject)


def validate_device(spec: dict[str, Any], device: DeviceConfig) -> None:
    """Check a parsed device's protocol and visitor configData; the error names the Device field."""
    subject = f"Device {device.id}"
    alpha = device.api_version.endswith("v1alpha2")
    validate_config(
        spec, "protocol", device.protocol_config, "spec.protocol" if alpha else "spec.protocol.configData", subject
    )
    for index, point in enumerate(device.points):
        where = f"spec.propertyVisitors[{index}]" if alpha else f"spec.properties[{index}].visitors.configData"
        validate_config(spec, "visitor", point.config, where, subject)


def check_device(device: dict[str, Any], model: dict[str, Any] | None, plugins: Any = None) -> DriverSpec | None:
    """For the cloud: check a Device object (and its DeviceModel) against its protocol's installed spec.

    Returns the serving :class:`DriverSpec`, or None when no installed mapper speaks the Device's protocol
    (nothing to check against). Raises :class:`DeviceError` / :class:`SpecError` (``.path`` names the
    field) when the Device is wrong.
    """
    from .device import parse_device

    parsed = parse_device(device, model)
    spec = find_driver(parsed.protocol, plugins)
    if spec is not None:
        validate_device(spec.schema, parsed)
    return spec


def find_driver(protocol: str, plugins: Any = None) -> DriverSpec | None:
    """The installed mapper plugin serving ``protocol`` (by entry-point name first, then aliases)."""
    from kubeedge.registry import PluginError, Plugins, installed

    plugins = plugins or Plugins()
    names = [info.name for info in installed("mapper")]
    for name in sorted(names, key=lambda n: n != protocol):
        try:
            spec = plugins.mapper_driver(name)
        except PluginError:
            continue
        if isinstance(spec, DriverSpec) and spec.serves(protocol):
            return spec
    return None

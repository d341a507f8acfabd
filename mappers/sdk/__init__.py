"""The mapper SDK: everything a protocol driver needs, so a driver is only protocol code.

A mapper plugin is a module named by an entry point in ``kubeedge.mappers`` that implements::

    from kubeedge import hookimpl
    from kubeedge.mappers.sdk import DriverSpec

    @hookimpl
    def kubeedge_mapper_driver(name):
        from .driver import MyDriver          # heavy protocol libraries load here, not at import
        return DriverSpec(protocol="mine", driver=MyDriver, schema=MY_SCHEMA)

The driver contract (call order included) is in :mod:`kubeedge.mappers.sdk.driver`; the runtime that
drives it over MQTT (twin, state, membership, desired -> write -> reported) in
:mod:`kubeedge.mappers.sdk.runtime`. Drivers import only this package and their protocol library.
"""

from __future__ import annotations

from typing import Any

from .convert import Span, check_range, coalesce, format_value, from_device, parse_value, to_device
from .device import DeviceConfig, DeviceError, Point, PropertySpec, load_device_files, parse_device
from .driver import DeviceUnreachable, Driver, DriverSpec, PointError, WriteRefused
from .specs import SpecError, check_device, find_driver, load_spec, validate_config, validate_device

__all__ = [
    "MAPPER_SECTION_SCHEMA",
    "DeviceConfig",
    "DeviceError",
    "DeviceUnreachable",
    "Driver",
    "DriverSpec",
    "Point",
    "PointError",
    "PropertySpec",
    "Span",
    "SpecError",
    "WriteRefused",
    "check_device",
    "check_range",
    "coalesce",
    "find_driver",
    "format_value",
    "from_device",
    "load_device_files",
    "load_spec",
    "parse_device",
    "parse_value",
    "to_device",
    "validate_config",
    "validate_device",
]

#: JSON Schema of a mapper's section in a profile (``mappers.<name>``): shared by every mapper plugin.
MAPPER_SECTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "devices": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Device + DeviceModel YAML files served besides the node's membership",
        },
        "coalesce": {"type": "boolean", "description": "merge adjacent reads into one request (default true)"},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "description": "seconds per driver call"},
    },
}

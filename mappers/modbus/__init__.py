"""The ``modbus`` mapper plugin: Modbus TCP and RTU devices through pymodbus.

Cheap to import: pymodbus loads only when the driver is asked for.
"""

from __future__ import annotations

from typing import Any

from kubeedge import hookimpl
from kubeedge.mappers.sdk import MAPPER_SECTION_SCHEMA, DriverSpec, load_spec


@hookimpl
def kubeedge_mapper_driver() -> DriverSpec:
    from .driver import ModbusDriver

    return DriverSpec(
        protocol="modbus",
        driver=ModbusDriver,
        schema=load_spec("modbus"),
        aliases=("modbus-tcp", "modbus-rtu"),
        description="Modbus TCP and RTU (pymodbus)",
    )


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    return MAPPER_SECTION_SCHEMA

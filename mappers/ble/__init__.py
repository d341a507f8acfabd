"""The ``ble`` mapper plugin: Bluetooth Low Energy GATT devices through bleak (v1alpha2's ``bluetooth``)."""

from __future__ import annotations

from typing import Any

from kubeedge import hookimpl
from kubeedge.mappers.sdk import MAPPER_SECTION_SCHEMA, DriverSpec, load_spec


@hookimpl
def kubeedge_mapper_driver() -> DriverSpec:
    from .driver import BleDriver

    return DriverSpec(
        protocol="ble",
        driver=BleDriver,
        schema=load_spec("ble"),
        aliases=("bluetooth",),
        description="Bluetooth LE GATT (bleak): read, write, notify, dataConverter",
    )


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    return MAPPER_SECTION_SCHEMA

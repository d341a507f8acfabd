"""The ``opcua`` mapper plugin: OPC UA servers through asyncua (imported only when a device needs it)."""

from __future__ import annotations

from typing import Any

from kubeedge import hookimpl
from kubeedge.mappers.sdk import MAPPER_SECTION_SCHEMA, DriverSpec, load_spec


@hookimpl
def kubeedge_mapper_driver() -> DriverSpec:
    from .driver import OpcuaDriver

    return DriverSpec(
        protocol="opcua",
        driver=OpcuaDriver,
        schema=load_spec("opcua"),
        aliases=("opc-ua",),
        description="OPC UA (asyncua): reads, writes, subscriptions, Basic256Sha256, user/password",
    )


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    return MAPPER_SECTION_SCHEMA

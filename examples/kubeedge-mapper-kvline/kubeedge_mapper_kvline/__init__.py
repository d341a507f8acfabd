"""The `kvline` mapper plugin: hooks only, cheap to import (the driver loads when asked for)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from kubeedge import hookimpl
from kubeedge.mappers.sdk import MAPPER_SECTION_SCHEMA, DriverSpec


def schema() -> dict[str, Any]:
    """The JSON Schema of this protocol's configData (``protocol`` and ``visitor``)."""
    loaded: dict[str, Any] = json.loads(resources.files(__name__).joinpath("spec.json").read_text())
    return loaded


@hookimpl
def kubeedge_mapper_driver() -> DriverSpec:
    from .driver import KvlineDriver

    return DriverSpec(protocol="kvline", driver=KvlineDriver, schema=schema(), description="kvline devices")


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    return MAPPER_SECTION_SCHEMA

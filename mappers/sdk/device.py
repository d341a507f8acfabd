"""Device and DeviceModel (``devices.kubeedge.io`` v1beta1 and v1alpha2) into what a mapper works with.

v1beta1 carries the protocol as ``spec.protocol{protocolName, configData}`` and each property's visitor as
``visitors{protocolName, configData}``. v1alpha2's built-in blocks (``modbus``, ``opcua``, ``bluetooth``,
``common`` and ``customizedProtocol``; ``propertyVisitors``) are turned into the same shape, so drivers
only ever see ``configData``. Cycles in the CRDs are nanoseconds.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .convert import TWIN_TYPES
from .push import SUPPORTED as PUSH_KINDS

__all__ = ["DeviceConfig", "DeviceError", "Point", "PropertySpec", "load_device_files", "parse_device"]

log = logging.getLogger("kubeedge.mappers.device")

NANOSECONDS = 1_000_000_000
DEFAULT_CYCLE = 1.0
#: v1alpha2 block name -> protocol name served by this project's mappers.
ALPHA_PROTOCOLS = {"modbus": "modbus", "opcua": "opcua", "bluetooth": "ble"}
#: generic visitor keys the SDK applies itself, whatever the protocol.
SDK_VISITOR_KEYS = ("scale", "valueOffset")


class DeviceError(ValueError):
    """A Device or DeviceModel this mapper cannot use; the text names the object and the field."""


@dataclass
class PropertySpec:
    """A DeviceModel property."""

    name: str
    type: str = "string"
    access_mode: str = "ReadWrite"
    minimum: float | None = None
    maximum: float | None = None
    unit: str = ""

    @property
    def writable(self) -> bool:
        return self.access_mode != "ReadOnly"


@dataclass(eq=False)
class Point:
    """One property of one device as the driver sees it: a name, its visitor ``configData`` and model."""

    name: str
    config: dict[str, Any]
    property: PropertySpec
    collect_cycle: float = DEFAULT_CYCLE
    report_cycle: float = DEFAULT_CYCLE
    report_to_cloud: bool = True
    desired: str | None = None
    push_mqtt: dict[str, Any] | None = None
    push_http: dict[str, Any] | None = None
    push_otel: dict[str, Any] | None = None
    #: pushMethod kinds this SDK does not send (``dbMethod``...): the runtime says so once
    push_unsupported: tuple[str, ...] = ()
    #: whatever the driver's ``prepare`` returned for this point.
    prepared: Any = None

    # ``property`` is a field here (KubeEdge's word), so the decorator is spelled in full.
    @builtins.property
    def scale(self) -> float:
        scale = self.config.get("scale")
        return 1.0 if scale in (None, 0) else float(scale)

    @builtins.property
    def value_offset(self) -> float:
        return float(self.config.get("valueOffset") or 0.0)


@dataclass
class DeviceConfig:
    namespace: str
    name: str
    protocol: str
    protocol_config: dict[str, Any]
    points: list[Point]
    model: str = ""
    api_version: str = ""
    data_topic: str | None = None
    state_report_cycle: float | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"

    def point(self, name: str) -> Point | None:
        for point in self.points:
            if point.name == name:
                return point
        return None


# -- helpers --------------------------------------------------------------------------------------------


def _cycle(value: Any, default: float) -> float:
    if value in (None, 0, ""):
        return default
    try:
        seconds = int(value) / NANOSECONDS
    except (TypeError, ValueError):
        raise DeviceError(f"a cycle must be an integer number of nanoseconds, got {value!r}") from None
    return max(seconds, 0.001)


def _number(value: Any, where: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DeviceError(f"{where}: {value!r} is not a number") from None


def _name_of(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "default", meta.get("name") or ""


def parse_model(model: dict[str, Any]) -> dict[str, PropertySpec]:
    """DeviceModel properties by name (v1beta1 ``type: INT`` or v1alpha2 ``type: {int: {...}}``)."""
    _, model_name = _name_of(model)
    properties: dict[str, PropertySpec] = {}
    for index, prop in enumerate((model.get("spec") or {}).get("properties") or []):
        where = f"DeviceModel {model_name}: spec.properties[{index}]"
        name = prop.get("name")
        if not name:
            raise DeviceError(f"{where}: no name")
        kind = prop.get("type")
        details: dict[str, Any] = prop
        if isinstance(kind, dict):  # v1alpha2
            if len(kind) != 1:
                raise DeviceError(f"{where}.type: expected one of int, float, double, string, boolean, bytes")
            kind, details = next(iter(kind.items()))
            details = details or {}
        kind = str(kind or "string").lower()
        if kind not in TWIN_TYPES:
            raise DeviceError(f"{where}.type: unknown type {kind!r} (expected {', '.join(sorted(TWIN_TYPES))})")
        properties[name] = PropertySpec(
            name=name,
            type=TWIN_TYPES[kind],
            access_mode=details.get("accessMode") or "ReadWrite",
            minimum=_number(details.get("minimum"), f"{where}.minimum"),
            maximum=_number(details.get("maximum"), f"{where}.maximum"),
            unit=details.get("unit") or "",
        )
    return properties


def _model_visitors(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    visitors: dict[str, dict[str, Any]] = {}
    for prop in (model.get("spec") or {}).get("properties") or []:
        visitor = prop.get("visitors") or {}
        if isinstance(visitor, dict) and isinstance(visitor.get("configData"), dict):
            visitors[prop.get("name", "")] = dict(visitor["configData"])
    return visitors


def _alpha_protocol(spec: dict[str, Any], device_name: str) -> tuple[str, dict[str, Any]]:
    protocol = spec.get("protocol") or {}
    common = protocol.get("common") or {}
    config: dict[str, Any] = {}
    name = ""
    for block, proto in ALPHA_PROTOCOLS.items():
        if protocol.get(block) is not None:
            name = proto
            config.update(protocol.get(block) or {})
    custom = protocol.get("customizedProtocol")
    if custom:
        name = custom.get("protocolName") or ""
        config.update(custom.get("configData") or {})
    if not name:
        raise DeviceError(f"Device {device_name}: spec.protocol names no protocol")
    if common:
        config.update(common.get("tcp") or {})
        config.update(common.get("com") or {})
        for key in ("collectTimeout", "collectRetryTimes", "reconnTimeout", "reconnRetryTimes", "commType"):
            if common.get(key) is not None:
                config.setdefault(key, common[key])
    return name, config


def _alpha_visitor(visitor: dict[str, Any]) -> dict[str, Any]:
    for block in ("modbus", "opcua", "bluetooth"):
        if visitor.get(block) is not None:
            return dict(visitor[block] or {})
    custom = visitor.get("customizedProtocol") or {}
    return dict(custom.get("configData") or {})


def parse_device(device: dict[str, Any], model: dict[str, Any] | None) -> DeviceConfig:
    """Build a :class:`DeviceConfig` from a Device and its DeviceModel; raise :class:`DeviceError`."""
    if not isinstance(device, dict):
        raise DeviceError("a Device must be an object")
    namespace, name = _name_of(device)
    if not name:
        raise DeviceError("Device has no metadata.name")
    spec = device.get("spec") or {}
    api_version = str(device.get("apiVersion") or "devices.kubeedge.io/v1beta1")
    properties = parse_model(model) if model else {}
    model_name = (spec.get("deviceModelRef") or {}).get("name") or ""
    alpha = api_version.endswith("v1alpha2") or "propertyVisitors" in spec
    points: list[Point] = []
    desired: dict[str, str] = {}
    if alpha:
        protocol, protocol_config = _alpha_protocol(spec, name)
        for twin in (device.get("status") or {}).get("twins") or []:
            value = (twin.get("desired") or {}).get("value")
            if twin.get("propertyName") and value is not None:
                desired[twin["propertyName"]] = str(value)
        entries = [
            (
                visitor.get("propertyName"),
                _alpha_visitor(visitor),
                visitor.get("collectCycle"),
                visitor.get("reportCycle"),
                True,
                None,
            )
            for visitor in spec.get("propertyVisitors") or []
        ]
        data = spec.get("data") or {}
        data_topic = data.get("dataTopic") or None
    else:
        block = spec.get("protocol") or {}
        protocol = block.get("protocolName") or (model or {}).get("spec", {}).get("protocol") or ""
        if not protocol:
            raise DeviceError(f"Device {name}: spec.protocol.protocolName is empty")
        protocol_config = dict((model or {}).get("spec", {}).get("protocolConfigData") or {})
        protocol_config.update(block.get("configData") or {})
        model_visitors = _model_visitors(model or {})
        entries = []
        for prop in spec.get("properties") or []:
            prop_name = prop.get("name")
            visitor_config = dict(model_visitors.get(prop_name, {}))
            visitor_config.update(((prop.get("visitors") or {}).get("configData")) or {})
            if (prop.get("desired") or {}).get("value") is not None:
                desired[prop_name] = str(prop["desired"]["value"])
            entries.append(
                (
                    prop_name,
                    visitor_config,
                    prop.get("collectCycle"),
                    prop.get("reportCycle"),
                    prop.get("reportToCloud", True) is not False,
                    prop.get("pushMethod"),
                )
            )
        data_topic = None
    for index, (prop_name, config, collect, report, to_cloud, push) in enumerate(entries):
        if not prop_name:
            raise DeviceError(f"Device {name}: property visitor {index} has no name")
        model_prop = properties.get(prop_name)
        if model_prop is None:
            if model:
                raise DeviceError(
                    f"Device {name}: property {prop_name!r} is not in DeviceModel {model_name or '?'}"
                    f" (it has: {', '.join(properties) or 'no properties'})"
                )
            model_prop = PropertySpec(prop_name)
        collect_cycle = _cycle(collect, DEFAULT_CYCLE)
        methods: dict[str, Any] = push if isinstance(push, dict) else {}
        points.append(
            Point(
                name=prop_name,
                config=config,
                property=model_prop,
                collect_cycle=collect_cycle,
                report_cycle=_cycle(report, collect_cycle),
                report_to_cloud=to_cloud,
                desired=desired.get(prop_name),
                push_mqtt=_push_method(methods, "mqtt"),
                push_http=_push_method(methods, "http"),
                push_otel=_push_method(methods, "otel"),
                push_unsupported=tuple(sorted(k for k, v in methods.items() if k not in PUSH_KINDS and v)),
            )
        )
    state_report = spec.get("stateReport") or {}
    return DeviceConfig(
        namespace=namespace,
        name=name,
        protocol=protocol,
        protocol_config=protocol_config,
        points=points,
        model=model_name,
        api_version=api_version,
        data_topic=data_topic,
        state_report_cycle=_cycle(state_report.get("reportCycle"), 0) or None,
        raw=device,
    )


def _push_method(methods: dict[str, Any], kind: str) -> dict[str, Any] | None:
    found = methods.get(kind)
    return dict(found) if isinstance(found, dict) else None


def pair_documents(documents: Iterable[dict[str, Any]], source: str = "") -> list[DeviceConfig]:
    """Match each Device in ``documents`` with its DeviceModel (same namespace, ``deviceModelRef``)."""
    models: dict[tuple[str, str], dict[str, Any]] = {}
    devices: list[dict[str, Any]] = []
    for doc in documents:
        if not isinstance(doc, dict):
            continue
        kind = doc.get("kind")
        if kind == "DeviceModel":
            models[_name_of(doc)] = doc
        elif kind == "Device":
            devices.append(doc)
        elif kind == "List":
            for item in doc.get("items") or []:
                (devices if item.get("kind") == "Device" else []).append(item)
                if item.get("kind") == "DeviceModel":
                    models[_name_of(item)] = item
    where = f"{source}: " if source else ""
    configs: list[DeviceConfig] = []
    for device in devices:
        namespace, name = _name_of(device)
        model_name = ((device.get("spec") or {}).get("deviceModelRef") or {}).get("name") or ""
        model = models.get((namespace, model_name))
        if model is None:
            raise DeviceError(f"{where}Device {namespace}/{name}: DeviceModel {model_name!r} is not in the file(s)")
        try:
            configs.append(parse_device(device, model))
        except DeviceError as exc:
            raise DeviceError(f"{where}{exc}") from None
    return configs


def load_device_files(paths: Iterable[str | Path]) -> list[DeviceConfig]:
    """Read Device + DeviceModel YAML files (several documents each; models may be in any of the files)."""
    import yaml

    documents: list[dict[str, Any]] = []
    names: list[str] = []
    for path in paths:
        file = Path(path)
        names.append(str(file))
        try:
            documents += [d for d in yaml.safe_load_all(file.read_text()) if d]
        except OSError as exc:
            raise DeviceError(f"{file}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise DeviceError(f"{file}: not valid YAML: {exc}") from None
    return pair_documents(documents, ", ".join(names))

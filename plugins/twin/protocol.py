"""KubeEdge's device-twin MQTT protocol as pure functions: topics, payload parsing, checks and encodings.

Shapes follow ``edge/pkg/devicetwin/dttype`` and what a real edgecore v1.23 answers (kubeedge-observed.md):
compact JSON, ``event_id`` and ``timestamp`` first, errors as ``{"event_id","timestamp","code","reason"}``.
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ALLOWED_STATES",
    "Attribute",
    "Device",
    "ProtocolError",
    "Twin",
    "device_topic",
    "encode",
    "error_payload",
    "fast_id",
    "node_topic",
    "now_ms",
    "parse_device_topic",
    "parse_node_topic",
]

DEVICE_PREFIX = "$hw/events/device/"
NODE_PREFIX = "$hw/events/node/"
ALLOWED_STATES = ("online", "offline", "ok", "unknown", "unhealthy")

# KubeEdge's dtcommon rules for twin keys and values, and its reasons, word for word.
KEY_PATTERN = re.compile(r"^[a-zA-Z0-9\-_.,:/@#]{1,128}$")
VALUE_PATTERN = re.compile(r"^[a-zA-Z0-9\-_.,:/@#]{1,512}$")
KEY_RULE = (
    "The key of twin must only include upper or lowercase letters, number, english, and special letter"
    " - _ . , : / @ # and the length of key should be less than 128 bytes"
)
VALUE_RULE = (
    "The value of twin must only include upper or lowercase letters, number, english, and special letter"
    " - _ . , : / @ # and the length of value should be less than 512 bytes"
)

BAD_UPDATE = "Unmarshal update request body failed, please check the request"
BAD_GET = "Unmarshal get request body failed, please check the request"
BAD_STATE = "Unmarshal update request body failed, please check the request"
BAD_MEMBERSHIP_GET = "Unmarshal membership get request body failed, please check the request"
NO_TWIN_KEY = "Update twin error, key:twin does not exist"


class ProtocolError(ValueError):
    """A request the twin answers with ``code``/``reason`` instead of a result."""

    def __init__(self, code: int, reason: str, event_id: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.event_id = event_id


def now_ms() -> int:
    return int(time.time() * 1000)


def fast_id() -> str:
    """A random UUID4 string without the system call ``uuid.uuid4`` makes (ids here need no secrecy)."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def encode(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def error_payload(event_id: str, code: int, reason: str, timestamp: int | None = None) -> str:
    return encode({"event_id": event_id, "timestamp": timestamp or now_ms(), "code": code, "reason": reason})


def device_topic(device_id: str, suffix: str) -> str:
    return f"{DEVICE_PREFIX}{device_id}/{suffix}"


def node_topic(node: str, suffix: str) -> str:
    return f"{NODE_PREFIX}{node}/{suffix}"


def parse_device_topic(topic: str) -> tuple[str, str] | None:
    """``$hw/events/device/<ns>/<name>/<action>`` -> (``<ns>/<name>``, action); None if not that shape."""
    if not topic.startswith(DEVICE_PREFIX):
        return None
    parts = topic[len(DEVICE_PREFIX) :].split("/")
    if len(parts) < 3:
        return None
    return f"{parts[0]}/{parts[1]}", "/".join(parts[2:])


def parse_node_topic(topic: str) -> tuple[str, str] | None:
    """``$hw/events/node/<node>/<action>`` -> (node, action)."""
    if not topic.startswith(NODE_PREFIX):
        return None
    node, _, action = topic[len(NODE_PREFIX) :].partition("/")
    if not node or not action:
        return None
    return node, action


# -- the twin's data ----------------------------------------------------------------------------------


@dataclass
class Twin:
    """One twin property. ``*_ts`` are the values' metadata timestamps (ms), used so newer always wins."""

    expected: str | None = None
    expected_ts: int = 0
    actual: str | None = None
    actual_ts: int = 0
    optional: bool = True
    type: str = "string"
    synced: bool = True  # the actual value has been handed to the cloud

    def to_msg(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.expected is not None:
            out["expected"] = {"value": self.expected, "metadata": {"timestamp": self.expected_ts}}
        if self.actual is not None:
            out["actual"] = {"value": self.actual, "metadata": {"timestamp": self.actual_ts}}
        out["optional"] = self.optional
        out["metadata"] = {"type": self.type}
        return out

    def copy(self) -> Twin:
        return Twin(**self.__dict__)

    @property
    def has_delta(self) -> bool:
        # As edgecore: an empty expected value asks for nothing.
        return bool(self.expected) and self.expected != self.actual


@dataclass
class Attribute:
    value: str = ""
    optional: bool = True
    type: str = "string"

    def to_msg(self) -> dict[str, Any]:
        return {"value": self.value, "optional": self.optional, "metadata": {"type": self.type}}


@dataclass
class Device:
    id: str
    name: str = ""
    description: str = ""
    state: str = "unknown"
    last_online: str = ""
    attributes: dict[str, Attribute] = field(default_factory=dict)
    twins: dict[str, Twin] = field(default_factory=dict)
    state_synced: bool = True
    spec: dict[str, Any] = field(default_factory=dict)  # {"device": Device object, "model": DeviceModel}

    def to_msg(self, *, with_twin: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name}
        if self.description:
            out["description"] = self.description
        out["state"] = self.state
        if self.last_online:
            out["last_online"] = self.last_online
        if self.attributes:
            out["attributes"] = {k: a.to_msg() for k, a in self.attributes.items()}
        if with_twin and self.twins:
            out["twin"] = {k: t.to_msg() for k, t in self.twins.items()}
        out.update(self.spec)  # extra keys for mappers; KubeEdge's own readers ignore them
        return out

    def delta(self) -> dict[str, str]:
        return {k: t.expected for k, t in self.twins.items() if t.has_delta and t.expected is not None}


# -- parsing requests ---------------------------------------------------------------------------------


def load_object(payload: str, reason: str, *, empty_ok: bool = False) -> dict[str, Any]:
    """Parse a request body; anything but a JSON object is a 400 with ``reason``."""
    if empty_ok and not payload.strip():
        return {}
    try:
        body = json.loads(payload)
    except ValueError:
        raise ProtocolError(400, reason) from None
    if not isinstance(body, dict):
        raise ProtocolError(400, reason)
    event_id = body.get("event_id", "")
    timestamp = body.get("timestamp", 0)
    if not isinstance(event_id, str) or isinstance(timestamp, bool) or not isinstance(timestamp, int | float | None):
        raise ProtocolError(400, reason)
    return body


@dataclass
class TwinChange:
    """One property in a twin update: None fields are not changed; ``delete`` removes the property."""

    actual: str | None = None
    expected: str | None = None
    type: str | None = None
    optional: bool | None = None
    actual_ts: int = 0
    expected_ts: int = 0
    delete: bool = False


def parse_twin_update(body: dict[str, Any], default_ts: int) -> dict[str, TwinChange]:
    """The ``twin`` map of an update (from a mapper or the cloud). Raises :class:`ProtocolError`."""
    event_id = body.get("event_id") or ""
    if "twin" not in body or body["twin"] is None:
        raise ProtocolError(400, NO_TWIN_KEY, event_id)
    twins = body["twin"]
    if not isinstance(twins, dict):
        raise ProtocolError(400, BAD_UPDATE, event_id)
    changes: dict[str, TwinChange] = {}
    for key, entry in twins.items():
        if not KEY_PATTERN.match(key):
            raise ProtocolError(400, KEY_RULE, event_id)
        if entry is None:
            changes[key] = TwinChange(delete=True)
            continue
        if not isinstance(entry, dict):
            raise ProtocolError(400, BAD_UPDATE, event_id)
        change = TwinChange()
        for side in ("actual", "expected"):
            part = entry.get(side)
            if part is None:
                continue
            if not isinstance(part, dict):
                raise ProtocolError(400, BAD_UPDATE, event_id)
            value = part.get("value")
            if value is None:
                continue
            if not isinstance(value, str):
                raise ProtocolError(400, BAD_UPDATE, event_id)
            if not VALUE_PATTERN.match(value):
                raise ProtocolError(400, VALUE_RULE, event_id)
            meta = part.get("metadata")
            ts = meta.get("timestamp") if isinstance(meta, dict) else None
            stamp = int(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) and ts > 0 else default_ts
            if side == "actual":
                change.actual, change.actual_ts = value, stamp
            else:
                change.expected, change.expected_ts = value, stamp
        meta = entry.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise ProtocolError(400, BAD_UPDATE, event_id)
        if isinstance(meta, dict) and isinstance(meta.get("type"), str) and meta["type"]:
            change.type = meta["type"]
        optional = entry.get("optional")
        if isinstance(optional, bool):
            change.optional = optional
        changes[key] = change
    return changes


def request_timestamp(body: dict[str, Any]) -> int:
    ts = body.get("timestamp")
    if isinstance(ts, int | float) and not isinstance(ts, bool) and ts > 0:
        return int(ts)
    return now_ms()


def parse_device_entry(entry: Any) -> Device:
    """One device of a cloud membership message (``added_devices`` / ``devices``)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
        raise ValueError(f"membership device without an id: {entry!r:.200}")
    device = Device(id=entry["id"], name=str(entry.get("name") or entry["id"].rpartition("/")[2]))
    device.description = str(entry.get("description") or "")
    device.spec = {key: entry[key] for key in ("device", "model") if isinstance(entry.get(key), dict)}
    state = entry.get("state")
    if isinstance(state, str) and state:
        device.state = state
    for key, attr in (entry.get("attributes") or {}).items():
        if isinstance(attr, dict):
            meta = attr.get("metadata") or {}
            device.attributes[key] = Attribute(
                value=str(attr.get("value") or ""),
                optional=bool(attr.get("optional", True)),
                type=str(meta.get("type") or "string") if isinstance(meta, dict) else "string",
            )
    return device

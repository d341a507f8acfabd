"""KubeEdge's DeviceTwin MQTT topics and payloads, as a mapper sends and receives them (pure functions).

Device ids in topics are ``<namespace>/<name>`` (KubeEdge 1.17 and later). Payload shapes follow
``edge/pkg/devicetwin/dttype`` and the classic mappers: every value travels as a string.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

__all__ = [
    "data_update",
    "device_topic",
    "membership_get",
    "parse_delta",
    "parse_json",
    "parse_membership",
    "state_update",
    "twin_result",
    "twin_update",
]

DEVICE_PREFIX = "$hw/events/device"
NODE_PREFIX = "$hw/events/node"
DELTA_FILTER = f"{DEVICE_PREFIX}/+/+/twin/update/delta"


def now_ms() -> int:
    return int(time.time() * 1000)


def device_topic(device_id: str, suffix: str) -> str:
    """``$hw/events/device/<ns>/<name>/<suffix>``, e.g. suffix ``twin/update`` or ``state/update``."""
    return f"{DEVICE_PREFIX}/{device_id}/{suffix}"


def data_topic(device_id: str) -> str:
    return f"$ke/events/device/{device_id}/data/update"


def node_topic(node: str, suffix: str) -> str:
    return f"{NODE_PREFIX}/{node}/{suffix}"


def device_of(topic: str) -> tuple[str, str] | None:
    """``(device id, suffix)`` of a ``$hw/events/device/<ns>/<name>/...`` topic, or None."""
    if not topic.startswith(DEVICE_PREFIX + "/"):
        return None
    parts = topic[len(DEVICE_PREFIX) + 1 :].split("/")
    if len(parts) < 3:
        return None
    return f"{parts[0]}/{parts[1]}", "/".join(parts[2:])


def _message(**fields: Any) -> bytes:
    return json.dumps({"event_id": str(uuid.uuid4()), "timestamp": now_ms(), **fields}).encode()


def twin_update(values: dict[str, tuple[str, str]]) -> bytes:
    """``values`` maps a property to ``(value string, twin type)``."""
    twin = {name: {"actual": {"value": value}, "metadata": {"type": kind}} for name, (value, kind) in values.items()}
    return _message(twin=twin)


def state_update(state: str) -> bytes:
    return _message(state=state)


def twin_result(code: int, reason: str, twin: dict[str, Any] | None = None) -> bytes:
    """A refusal on ``twin/update/result``: ``{"event_id","timestamp","code","reason"[,"twin"]}``."""
    fields: dict[str, Any] = {"code": code, "reason": reason}
    if twin:
        fields["twin"] = twin
    return _message(**fields)


def data_update(values: dict[str, tuple[str, str]]) -> bytes:
    stamp = now_ms()
    data = {
        name: {"value": value, "metadata": {"timestamp": stamp, "type": kind}} for name, (value, kind) in values.items()
    }
    return json.dumps({"event_id": str(uuid.uuid4()), "timestamp": stamp, "data": data}).encode()


def membership_get() -> bytes:
    return _message()


def parse_json(payload: bytes | str) -> dict[str, Any]:
    """A JSON object from an MQTT payload; raises ValueError with the reason."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"payload is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("payload is not a JSON object")
    return data


def parse_delta(payload: bytes | str) -> dict[str, str]:
    """Desired values of a ``twin/update/delta`` message, by property."""
    data = parse_json(payload)
    delta = data.get("delta")
    if not isinstance(delta, dict):
        raise ValueError("delta message has no 'delta' object")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in delta.items()}


def parse_membership(payload: bytes | str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """``(added or listed devices, removed devices, is a full list)`` of a membership message."""
    return membership_lists(parse_json(payload))


def membership_lists(data: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """The same for a membership object already decoded (e.g. from the edge's bus)."""
    if "devices" in data:
        return list(data.get("devices") or []), [], True
    return list(data.get("added_devices") or []), list(data.get("removed_devices") or []), False

"""MQTT topic rules the eventbus needs, as pure functions: filter matching, KubeEdge's subscriptions, routing.

KubeEdge >= 1.17 subscribes to the topics in :data:`KUBEEDGE_TOPICS` (``edge/pkg/eventbus/mqtt/client.go``);
messages on ``$hw/events/device/...`` and ``$hw/events/node/...`` belong to the device twin, everything else
goes up to the cloud router.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = [
    "KUBEEDGE_TOPICS",
    "MODES",
    "is_twin_topic",
    "matches",
    "matches_any",
    "parse_mode",
    "parse_server",
    "validate_filter",
    "validate_topic",
]

KUBEEDGE_TOPICS: tuple[str, ...] = (
    "$hw/events/upload/#",
    "$hw/events/device/+/+/state/update",
    "$hw/events/device/+/+/twin/+",
    "$hw/events/node/+/membership/get",
    "SYS/dis/upload_records",
    "+/user/#",
)

# KubeEdge's numbering (API/componentconfig/edgecore/v1alpha2/types.go): 0 internal, 1 both, 2 external.
MODES: dict[str, int] = {"internal": 0, "both": 1, "external": 2}


def parse_mode(value: int | str) -> int:
    """``0``/``1``/``2`` or ``internal``/``both``/``external`` -> KubeEdge's number; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"mqttMode must be 0, 1, 2 or internal/both/external, got {value!r}")
    if isinstance(value, int) and value in MODES.values():
        return value
    if isinstance(value, str):
        key = value.strip().lower()
        if key in MODES:
            return MODES[key]
        if key in {"0", "1", "2"}:
            return int(key)
    raise ValueError(f"mqttMode must be 0, 1, 2 or internal/both/external, got {value!r}")


def parse_server(url: str) -> tuple[str, int, bool]:
    """``tcp://host:port`` (or ``ssl://``/``tls://``/``mqtts://``) -> (host, port, tls)."""
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    scheme = parts.scheme.lower()
    if scheme not in {"tcp", "mqtt", "ssl", "tls", "mqtts"}:
        raise ValueError(f"MQTT server {url!r}: scheme must be tcp:// or ssl://")
    tls = scheme in {"ssl", "tls", "mqtts"}
    host = parts.hostname or "127.0.0.1"
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"MQTT server {url!r}: bad port") from None
    if port is None:
        port = 8883 if tls else 1883
    return host, port, tls


def validate_topic(topic: str) -> None:
    """A topic a message may be published on: not empty, no wildcards, no NUL."""
    if not topic:
        raise ValueError("an MQTT topic may not be empty")
    if "+" in topic or "#" in topic:
        raise ValueError(f"cannot publish on {topic!r}: wildcards are for subscriptions")
    if "\x00" in topic:
        raise ValueError("an MQTT topic may not contain NUL")
    if len(topic.encode()) > 65535:
        raise ValueError("an MQTT topic is at most 65535 bytes")


def validate_filter(topic_filter: str) -> None:
    """A subscription filter: ``#`` only as the whole last level, ``+`` only as a whole level."""
    if not topic_filter:
        raise ValueError("a topic filter may not be empty")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise ValueError(f"topic filter {topic_filter!r}: '#' must be the whole last level")
        if "+" in level and level != "+":
            raise ValueError(f"topic filter {topic_filter!r}: '+' must be a whole level")


def matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` by MQTT's rules (wildcards do not match a leading ``$``)."""
    if topic.startswith("$") and topic_filter[:1] in {"+", "#"}:
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)


def matches_any(filters: Iterable[str], topic: str) -> bool:
    return any(matches(f, topic) for f in filters)


def is_twin_topic(topic: str) -> bool:
    """Topics the device twin owns (KubeEdge: prefix ``$hw/events/device`` or ``$hw/events/node``)."""
    return topic.startswith(("$hw/events/device", "$hw/events/node"))

"""Pure topic rules: MQTT filter matching, KubeEdge's mqttMode numbering, server URLs, routing."""

from __future__ import annotations

import pytest

from kubeedge.plugins.eventbus.topics import (
    KUBEEDGE_TOPICS,
    is_twin_topic,
    matches,
    matches_any,
    parse_mode,
    parse_server,
    validate_filter,
    validate_topic,
)


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("$hw/events/device/+/+/twin/+", "$hw/events/device/default/foo/twin/update", True),
        ("$hw/events/device/+/+/twin/+", "$hw/events/device/default/foo/twin/update/result", False),
        ("$hw/events/device/+/+/twin/+", "$hw/events/device/foo/twin/update", False),
        ("$hw/events/device/+/+/state/update", "$hw/events/device/default/foo/state/update", True),
        ("$hw/events/upload/#", "$hw/events/upload", True),
        ("$hw/events/upload/#", "$hw/events/upload/a/b/c", True),
        ("+/user/#", "default/user/x", True),
        ("+/user/#", "$hw/user/x", False),
        ("#", "$SYS/broker", False),
        ("SYS/dis/upload_records", "SYS/dis/upload_records", True),
        ("a/+", "a", False),
        ("a/b", "a/b/c", False),
    ],
)
def test_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert matches(topic_filter, topic) is expected


def test_kubeedge_subscriptions_cover_the_mapper_topics() -> None:
    for topic in (
        "$hw/events/device/default/foo/twin/update",
        "$hw/events/device/default/foo/twin/get",
        "$hw/events/device/default/foo/state/update",
        "$hw/events/node/edge-1/membership/get",
        "$hw/events/upload/anything",
        "SYS/dis/upload_records",
        "default/user/app",
    ):
        assert matches_any(KUBEEDGE_TOPICS, topic), topic
    assert not matches_any(KUBEEDGE_TOPICS, "$hw/events/device/default/foo/twin/update/result")


@pytest.mark.parametrize(
    ("value", "number"), [(0, 0), (1, 1), (2, 2), ("internal", 0), ("both", 1), ("External", 2), ("2", 2)]
)
def test_parse_mode(value: int | str, number: int) -> None:
    assert parse_mode(value) == number


@pytest.mark.parametrize("value", [3, -1, "mosquitto", True, ""])
def test_parse_mode_refuses(value: int | str) -> None:
    with pytest.raises(ValueError, match="mqttMode"):
        parse_mode(value)


def test_parse_server() -> None:
    assert parse_server("tcp://127.0.0.1:1884") == ("127.0.0.1", 1884, False)
    assert parse_server("ssl://broker.local:8883") == ("broker.local", 8883, True)
    assert parse_server("127.0.0.1:0") == ("127.0.0.1", 0, False)
    with pytest.raises(ValueError, match="scheme"):
        parse_server("http://127.0.0.1:1")


def test_validate() -> None:
    validate_topic("$hw/events/device/default/foo/twin/update/delta")
    for bad in ("", "a/+", "a/#", "a\x00b"):
        with pytest.raises(ValueError):
            validate_topic(bad)
    validate_filter("a/+/b/#")
    for bad in ("a/#/b", "a/b+", ""):
        with pytest.raises(ValueError):
            validate_filter(bad)


def test_twin_topics() -> None:
    assert is_twin_topic("$hw/events/device/default/foo/twin/get")
    assert is_twin_topic("$hw/events/node/edge-1/membership/get")
    assert not is_twin_topic("$hw/events/upload/x")

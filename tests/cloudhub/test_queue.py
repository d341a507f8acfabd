"""The per-node queue and version ordering, without I/O."""

from __future__ import annotations

import pytest

from kubeedge import Message
from kubeedge.plugins.cloudhub.queue import Entry, NodeQueue, needs_ack
from kubeedge.plugins.cloudhub.records import compare_versions


def _entry(key: str, version: str, op: str = "update") -> Entry:
    return Entry(
        key, Message(operation=op, group="resource", resource=key, resource_version=version), f"uid-{key}", 0.0
    )


@pytest.mark.parametrize(
    ("a", "b", "order"), [("2", "10", -1), ("10", "2", 1), ("7", "7", 0), ("abc", "abd", 1), ("", "", 0)]
)
def test_compare_versions(a: str, b: str, order: int) -> None:
    assert compare_versions(a, b) == order


def test_newer_replaces_older_and_not_the_other_way() -> None:
    queue = NodeQueue("n")
    assert queue.add(_entry("k", "5"))
    assert not queue.add(_entry("k", "4"))
    assert not queue.add(_entry("k", "5"))
    assert queue.add(_entry("k", "5", op="delete"))
    assert queue.add(_entry("k", "9"))
    assert [m.resource_version for m in queue.next_batch(0.0)] == ["9"]
    assert queue.dropped_older == 2


def test_resend_schedule_and_giving_up() -> None:
    queue = NodeQueue("n", retry_interval=5, max_sends=3)
    queue.add(_entry("k", "1"))
    (first,) = queue.next_batch(0.0)
    assert queue.next_batch(4.9) == [] and queue.next_due() == 5.0
    assert [m.msg_id for m in queue.next_batch(5.0)] == [first.msg_id]
    assert [m.msg_id for m in queue.next_batch(10.0)] == [first.msg_id]
    assert queue.next_batch(15.0) == [] and queue.gave_up == 1 and not queue.entries


def test_ack_and_disconnect() -> None:
    queue = NodeQueue("n", window=2)
    for i in range(3):
        queue.add(_entry(f"k{i}", "1"))
    batch = queue.next_batch(0.0)
    assert len(batch) == 2  # the window
    assert queue.ack(batch[0].msg_id) is not None and queue.ack("unknown") is None
    assert [m.resource for m in queue.next_batch(0.0)] == ["k2"]
    queue.disconnected()
    assert sorted(m.resource for m in queue.next_batch(0.0)) == ["k1", "k2"]


def test_replaced_message_in_flight_is_not_resent() -> None:
    queue = NodeQueue("n", retry_interval=1)
    queue.add(_entry("k", "1"))
    (old,) = queue.next_batch(0.0)
    queue.add(_entry("k", "2"))
    (new,) = queue.next_batch(0.1)
    assert new.resource_version == "2"
    assert [m.msg_id for m in queue.next_batch(1.05)] == []  # the old one's resend is dropped
    assert queue.ack(old.msg_id) is None  # forgotten once replaced and due; the newer one is what counts
    assert "k" in queue.entries
    assert queue.ack(new.msg_id) is not None and not queue.entries


@pytest.mark.parametrize(
    ("resource", "group", "operation", "expected"),
    [
        ("default/pod/p", "resource", "update", True),
        ("membership", "twin", "update", False),
        ("device/default/d/twin/cloud_updated", "twin", "update", False),
        ("default/topic", "user", "publish", False),
        ("default/pod/p", "resource", "response", False),
    ],
)
def test_which_messages_need_an_ack(resource: str, group: str, operation: str, expected: bool) -> None:
    assert needs_ack(Message(resource=resource, group=group, operation=operation)) is expected

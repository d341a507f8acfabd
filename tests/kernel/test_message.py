"""The beehive message: KubeEdge's exact JSON, and Go-like tolerance when decoding."""

from __future__ import annotations

import json

import pytest

from kubeedge import Message, MessageError

# Built from the struct tags of KubeEdge's model.Message (reference/kubeedge.md section 2).
KUBEEDGE_FRAME = (
    '{"header":{"msg_id":"3f1c","parent_msg_id":"","timestamp":1737460826000,'
    '"resourceversion":"81234","sync":false,"type":""},'
    '"route":{"source":"edgecontroller","destination":"","group":"resource",'
    '"operation":"insert","resource":"node/edge-1/default/pod/nginx"},'
    '"content":{"metadata":{"name":"nginx"}}}'
)


def test_decodes_kubeedge_frame() -> None:
    message = Message.from_json(KUBEEDGE_FRAME)
    assert message.msg_id == "3f1c"
    assert message.timestamp == 1737460826000
    assert message.resource_version == "81234"
    assert (message.source, message.group, message.operation) == ("edgecontroller", "resource", "insert")
    assert message.resource == "node/edge-1/default/pod/nginx"
    assert message.content == {"metadata": {"name": "nginx"}}


def test_encodes_with_kubeedge_keys_and_omitempty() -> None:
    message = Message(source="websocket", group="resource", operation="keepalive", resource="node", content="ping")
    wire = json.loads(message.to_json())
    assert set(wire) == {"header", "route", "content"}
    assert set(wire["header"]) == {"msg_id", "timestamp"}  # empty fields are left out, as Go's omitempty
    assert wire["route"] == {"source": "websocket", "group": "resource", "operation": "keepalive", "resource": "node"}
    assert wire["content"] == "ping"


def test_round_trip_keeps_every_field() -> None:
    original = Message(
        source="a",
        destination="b",
        group="g",
        operation="update",
        resource="r",
        content=[1, "x"],
        parent_msg_id="p",
        resource_version="7",
        sync=True,
        type="t",
    )
    assert Message.from_json(original.to_json()) == original


def test_keys_match_case_insensitively_and_unknown_keys_are_ignored() -> None:
    frame = {
        "Header": {"MSG_ID": "x", "Timestamp": 5, "extra": 1},
        "ROUTE": {"Operation": "query"},
        "Content": None,
        "unknown": True,
    }
    message = Message.from_dict(frame)
    assert (message.msg_id, message.timestamp, message.operation) == ("x", 5, "query")


def test_reply_points_at_its_request() -> None:
    request = Message(source="edged", group="meta", operation="query", resource="default/configmap/c")
    reply = request.reply("OK", source="metamanager")
    assert reply.parent_msg_id == request.msg_id
    assert reply.operation == "response"
    assert reply.resource == request.resource
    assert reply.is_response and not request.is_response


@pytest.mark.parametrize(
    ("frame", "fragment"),
    [
        (b"\xff\xfe", "not JSON"),
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"header": "x"}', "header: expected an object"),
        ('{"header": {"msg_id": 5}}', "header.msg_id: expected a string"),
        ('{"header": {"timestamp": "soon"}}', "header.timestamp: expected an integer"),
        ('{"header": {"sync": "yes"}}', "header.sync: expected true or false"),
        ('{"route": {"resource": []}}', "route.resource: expected a string"),
    ],
)
def test_bad_frames_raise_one_clear_error(frame: str | bytes, fragment: str) -> None:
    with pytest.raises(MessageError, match=fragment):
        Message.from_json(frame)

"""KubeEdge's beehive message: the one value that crosses every module boundary and the cloud-edge link.

The JSON shape is KubeEdge's (``BH/core/model/message.go``): ``header.msg_id`` (not ``id``), ``route``
(not ``router``), timestamps in milliseconds. Decoding is as tolerant as Go's encoding/json: keys match
case-insensitively and unknown keys are ignored; anything that is not a message raises
:class:`MessageError`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Message", "MessageError", "new_msg_id", "now_ms"]

# Operations KubeEdge defines (beehive + edge + cloudhub); listed so callers can share the spelling.
INSERT = "insert"
UPDATE = "update"
DELETE = "delete"
QUERY = "query"
PATCH = "patch"
UPLOAD = "upload"
RESPONSE = "response"
ERROR = "error"
KEEPALIVE = "keepalive"
CONNECT = "connect"


class MessageError(ValueError):
    """A frame or object that is not a beehive message; the text says which field and why."""


def new_msg_id() -> str:
    return str(uuid.uuid4())


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class Message:
    """One beehive message. Attribute names are Python's; :meth:`to_dict` gives KubeEdge's keys."""

    source: str = ""
    group: str = ""
    operation: str = ""
    resource: str = ""
    content: Any = None
    destination: str = ""
    msg_id: str = field(default_factory=new_msg_id)
    parent_msg_id: str = ""
    timestamp: int = field(default_factory=now_ms)
    resource_version: str = ""
    sync: bool = False
    type: str = ""

    # -- building -------------------------------------------------------------------------------------

    def reply(self, content: Any, *, operation: str = RESPONSE, source: str = "") -> Message:
        """A response to this message: ``parent_msg_id`` is this message's id, the route is kept."""
        return Message(
            source=source or self.destination or self.source,
            group=self.group,
            operation=operation,
            resource=self.resource,
            content=content,
            parent_msg_id=self.msg_id,
            sync=self.sync,
        )

    @property
    def is_response(self) -> bool:
        return bool(self.parent_msg_id)

    # -- wire format ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        header: dict[str, Any] = {"msg_id": self.msg_id, "timestamp": self.timestamp}
        # Go's omitempty: empty strings and false are left out.
        if self.parent_msg_id:
            header["parent_msg_id"] = self.parent_msg_id
        if self.resource_version:
            header["resourceversion"] = self.resource_version
        if self.sync:
            header["sync"] = True
        if self.type:
            header["type"] = self.type
        route: dict[str, Any] = {}
        for key, value in (
            ("source", self.source),
            ("destination", self.destination),
            ("group", self.group),
            ("operation", self.operation),
            ("resource", self.resource),
        ):
            if value:
                route[key] = value
        return {"header": header, "route": route, "content": self.content}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any) -> Message:
        if not isinstance(data, dict):
            raise MessageError(f"a message is a JSON object, got {type(data).__name__}")
        top = _fold(data)
        header = _fold(_section(top, "header"))
        route = _fold(_section(top, "route"))
        return cls(
            msg_id=_string(header, "msg_id", "header"),
            parent_msg_id=_string(header, "parent_msg_id", "header"),
            timestamp=_integer(header, "timestamp", "header"),
            resource_version=_string(header, "resourceversion", "header"),
            sync=_boolean(header, "sync", "header"),
            type=_string(header, "type", "header"),
            source=_string(route, "source", "route"),
            destination=_string(route, "destination", "route"),
            group=_string(route, "group", "route"),
            operation=_string(route, "operation", "route"),
            resource=_string(route, "resource", "route"),
            content=top.get("content"),
        )

    @classmethod
    def from_json(cls, frame: str | bytes) -> Message:
        try:
            data = json.loads(frame)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MessageError(f"frame is not JSON: {exc}") from None
        return cls.from_dict(data)


def _fold(obj: dict[str, Any]) -> dict[str, Any]:
    """Lower-case the keys: Go matches JSON keys to struct tags case-insensitively."""
    folded: dict[str, Any] = {}
    for key, value in obj.items():
        folded.setdefault(str(key).lower(), value)
    return folded


def _section(top: dict[str, Any], name: str) -> dict[str, Any]:
    value = top.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MessageError(f"{name}: expected an object, got {type(value).__name__}")
    return value


def _string(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MessageError(f"{where}.{key}: expected a string, got {type(value).__name__}")
    return value


def _integer(obj: dict[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise MessageError(f"{where}.{key}: expected an integer, got {value!r}")
    return int(value)


def _boolean(obj: dict[str, Any], key: str, where: str) -> bool:
    value = obj.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise MessageError(f"{where}.{key}: expected true or false, got {value!r}")
    return value

"""The cloud-edge stream tunnel's wire format, shared by cloudstream and edgestream (pure, no I/O).

This file is the public interface between the two ends of the tunnel; edgestream imports it. A tunnel is
one websocket (``wss://<cloud>:10004/v1/kubeedge/connect``); every binary websocket message is one frame,
KubeEdge's: ``uvarint connectID + uvarint type + data``. The types are KubeEdge's numbers:

========  ======  =====================================================================================
type      number  data
========  ======  =====================================================================================
logs      0       cloud -> edge: JSON :class:`LogsRequest` (opens a connection); edge -> cloud: JSON reply
exec      1       cloud -> edge: JSON :class:`ExecRequest`; edge -> cloud: JSON reply
metric    2       cloud -> edge: JSON :class:`MetricsRequest` (a kubelet stats path); edge -> cloud: JSON
                  reply ``{"ok": true, "contentType": ...}``, then the body in data frames (channel 1)
data      3       one channel byte then bytes, the channels of ``v5.channel.k8s.io`` (0 stdin,
                  1 stdout, 2 stderr, 4 resize JSON, 255 + channel: that channel is closed)
remove    4       cloud -> edge: the client went away, stop the connection
close     5       edge -> cloud: the connection is over; JSON ``{"exitCode": n}`` or ``{"error": text}``
attach    6       like exec, for the container's own process
========  ======  =====================================================================================

The edge answers an opening frame with a frame of the same type whose JSON is ``{"ok": true}`` or
``{"ok": false, "code": <HTTP status>, "reason": ..., "message": ...}`` before any data flows, so the cloud
can answer its HTTP client with the right status.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "ATTACH",
    "CHANNEL_CLOSE",
    "CHANNEL_ERROR",
    "CHANNEL_RESIZE",
    "CHANNEL_STDERR",
    "CHANNEL_STDIN",
    "CHANNEL_STDOUT",
    "CLOSE",
    "CONNECT_PATH",
    "DATA",
    "EXEC",
    "LOGS",
    "METRIC",
    "NODE_HEADER",
    "REMOVE",
    "TYPE_NAMES",
    "ExecRequest",
    "Frame",
    "FrameError",
    "LogsRequest",
    "MetricsRequest",
    "decode_frame",
    "decode_uvarint",
    "encode_frame",
    "encode_uvarint",
    "exec_status",
    "k8s_status",
]

LOGS, EXEC, METRIC, DATA, REMOVE, CLOSE, ATTACH = 0, 1, 2, 3, 4, 5, 6
TYPE_NAMES = {
    LOGS: "logs",
    EXEC: "exec",
    METRIC: "metric",
    DATA: "data",
    REMOVE: "remove",
    CLOSE: "close",
    ATTACH: "attach",
}

CONNECT_PATH = "/v1/kubeedge/connect"
NODE_HEADER = "SessionHostNameOverride"
INTERNAL_IP_HEADER = "SessionInternalIP"

# v5.channel.k8s.io (and v4) channel numbers
CHANNEL_STDIN, CHANNEL_STDOUT, CHANNEL_STDERR, CHANNEL_ERROR, CHANNEL_RESIZE, CHANNEL_CLOSE = 0, 1, 2, 3, 4, 255


class FrameError(ValueError):
    """A frame that cannot be decoded; the text says what is wrong with it."""


def encode_uvarint(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"uvarint cannot encode {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_uvarint(data: bytes, offset: int = 0) -> tuple[int, int]:
    """(value, offset after it). Go's binary.Uvarint: at most 10 bytes, little-endian groups of 7 bits."""
    value = shift = 0
    for index in range(offset, min(len(data), offset + 10)):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, index + 1
        shift += 7
    raise FrameError("truncated or overlong uvarint")


@dataclass(frozen=True)
class Frame:
    connect_id: int
    type: int
    data: bytes = b""

    def json(self) -> Any:
        try:
            return json.loads(self.data)
        except ValueError as exc:
            raise FrameError(
                f"{TYPE_NAMES.get(self.type, self.type)} frame {self.connect_id}: not JSON: {exc}"
            ) from None


def encode_frame(connect_id: int, type_: int, data: bytes = b"") -> bytes:
    return encode_uvarint(connect_id) + encode_uvarint(type_) + data


def decode_frame(message: bytes) -> Frame:
    connect_id, offset = decode_uvarint(message)
    type_, offset = decode_uvarint(message, offset)
    if type_ not in TYPE_NAMES:
        raise FrameError(f"frame for connection {connect_id}: unknown type {type_}")
    return Frame(connect_id, type_, bytes(message[offset:]))


@dataclass
class LogsRequest:
    namespace: str
    pod: str
    container: str
    follow: bool = False
    tail_lines: int | None = None
    previous: bool = False
    timestamps: bool = False
    since_seconds: int | None = None
    limit_bytes: int | None = None

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: Any) -> LogsRequest:
        if not isinstance(data, dict) or not all(
            isinstance(data.get(k), str) for k in ("namespace", "pod", "container")
        ):
            raise FrameError("logs request: namespace, pod and container (strings) are required")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class ExecRequest:
    namespace: str
    pod: str
    container: str
    command: list[str] = field(default_factory=list)  # empty for attach
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True
    tty: bool = False

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: Any) -> ExecRequest:
        if not isinstance(data, dict) or not all(
            isinstance(data.get(k), str) for k in ("namespace", "pod", "container")
        ):
            raise FrameError("exec request: namespace, pod and container (strings) are required")
        command = data.get("command") or []
        if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
            raise FrameError("exec request: command must be a list of strings")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class MetricsRequest:
    """A GET of one of kubelet's stats paths on the node: ``/stats/summary`` (the Summary API, JSON) or
    ``/metrics/resource`` (Prometheus text, what metrics-server scrapes). ``query`` is the raw query string."""

    path: str
    query: str = ""

    PATHS = ("/stats/summary", "/metrics/resource")

    def encode(self) -> bytes:
        return json.dumps({"path": self.path, "query": self.query}).encode()

    @classmethod
    def decode(cls, data: Any) -> MetricsRequest:
        if not isinstance(data, dict) or not isinstance(data.get("path"), str):
            raise FrameError("metric request: path (a string) is required")
        query = data.get("query") or ""
        if not isinstance(query, str):
            raise FrameError("metric request: query must be a string")
        return cls(str(data["path"]), query)


# -- Kubernetes Status objects ------------------------------------------------------------------------------

_REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def k8s_status(code: int, message: str, reason: str = "") -> dict[str, Any]:
    """A ``meta/v1 Status`` for an HTTP error, as the API server writes one."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, "Unknown"),
        "code": code,
    }


def exec_status(command: list[str], exit_code: int | None, error: str = "") -> dict[str, Any]:
    """The Status an exec ends with on the error channel (3), formatted as kubelet formats it."""
    if error:
        return {"metadata": {}, "status": "Failure", "message": error, "reason": "InternalError", "code": 500}
    if not exit_code:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": (
            f"command terminated with non-zero exit code: error executing command {_go_list(command)}, "
            f"exit code {exit_code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
    }


def _go_list(items: list[str]) -> str:
    return "[" + " ".join(items) + "]"

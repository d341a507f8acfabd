"""Kubernetes' protobuf request bodies, decoded for the few simple types typed clients create with them.

kubectl's typed commands (``kubectl create namespace|configmap|secret|serviceaccount|deployment``) send
``application/vnd.kubernetes.protobuf``: the magic ``k8s\\x00`` and a ``runtime.Unknown`` envelope
(type meta, raw bytes) around the object's own protobuf. The schemas below are the field numbers of
k8s.io/api's ``generated.proto`` for those types only; any field outside them is refused with a clear
error (the client should send JSON, as ``kubectl apply`` does), never dropped silently.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

__all__ = ["MAGIC", "ProtobufError", "decode_object"]

MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    """A body that is not a protobuf object this server can read; the text says what."""


# A schema maps field number -> (JSON name, kind); kinds: "string", "bytes" (base64 in JSON), "int", "bool",
# "map" (string -> string), "bytesmap" (string -> bytes), "strings" (repeated string), "time", or a nested
# schema (dict) / ("list", schema) for repeated messages.
Schema = dict[int, tuple[str, Any]]

TIME: Schema = {1: ("seconds", "int"), 2: ("nanos", "int")}
OWNER_REFERENCE: Schema = {
    1: ("kind", "string"),
    3: ("name", "string"),
    4: ("uid", "string"),
    5: ("apiVersion", "string"),
    6: ("controller", "bool"),
    7: ("blockOwnerDeletion", "bool"),
}
OBJECT_META: Schema = {
    1: ("name", "string"),
    2: ("generateName", "string"),
    3: ("namespace", "string"),
    5: ("uid", "string"),
    6: ("resourceVersion", "string"),
    7: ("generation", "int"),
    8: ("creationTimestamp", "time"),
    11: ("labels", "map"),
    12: ("annotations", "map"),
    13: ("ownerReferences", ("list", OWNER_REFERENCE)),
    14: ("finalizers", "strings"),
}
LOCAL_OBJECT_REFERENCE: Schema = {1: ("name", "string")}
OBJECT_REFERENCE: Schema = {
    1: ("kind", "string"),
    2: ("namespace", "string"),
    3: ("name", "string"),
    4: ("uid", "string"),
    5: ("apiVersion", "string"),
}
LABEL_SELECTOR: Schema = {
    1: ("matchLabels", "map"),
    2: ("matchExpressions", ("list", {1: ("key", "string"), 2: ("operator", "string"), 3: ("values", "strings")})),
}
CONTAINER_PORT: Schema = {
    1: ("name", "string"),
    2: ("hostPort", "int"),
    3: ("containerPort", "int"),
    4: ("protocol", "string"),
}
CONTAINER: Schema = {
    1: ("name", "string"),
    2: ("image", "string"),
    3: ("command", "strings"),
    4: ("args", "strings"),
    5: ("workingDir", "string"),
    6: ("ports", ("list", CONTAINER_PORT)),
    7: ("env", ("list", {1: ("name", "string"), 2: ("value", "string")})),
    8: ("resources", {}),
    14: ("imagePullPolicy", "string"),
}
POD_SPEC: Schema = {
    2: ("containers", ("list", CONTAINER)),
    3: ("restartPolicy", "string"),
    7: ("nodeSelector", "map"),
    10: ("nodeName", "string"),
}
POD_TEMPLATE: Schema = {1: ("metadata", OBJECT_META), 2: ("spec", POD_SPEC)}
SCHEMAS: dict[str, Schema] = {
    "Deployment": {
        1: ("metadata", OBJECT_META),
        2: (
            "spec",
            {
                1: ("replicas", "int"),
                2: ("selector", LABEL_SELECTOR),
                3: ("template", POD_TEMPLATE),
                4: ("strategy", {1: ("type", "string")}),
                5: ("minReadySeconds", "int"),
                6: ("revisionHistoryLimit", "int"),
                9: ("progressDeadlineSeconds", "int"),
            },
        ),
        3: ("status", {}),
    },
    "Namespace": {
        1: ("metadata", OBJECT_META),
        2: ("spec", {1: ("finalizers", "strings")}),
        3: ("status", {1: ("phase", "string")}),
    },
    "ConfigMap": {
        1: ("metadata", OBJECT_META),
        2: ("data", "map"),
        3: ("binaryData", "bytesmap"),
        4: ("immutable", "bool"),
    },
    "Secret": {
        1: ("metadata", OBJECT_META),
        2: ("data", "bytesmap"),
        3: ("type", "string"),
        4: ("stringData", "map"),
        5: ("immutable", "bool"),
    },
    "ServiceAccount": {
        1: ("metadata", OBJECT_META),
        2: ("secrets", ("list", OBJECT_REFERENCE)),
        3: ("imagePullSecrets", ("list", LOCAL_OBJECT_REFERENCE)),
        4: ("automountServiceAccountToken", "bool"),
    },
}
UNKNOWN: Schema = {
    1: ("typeMeta", {1: ("apiVersion", "string"), 2: ("kind", "string")}),
    2: ("raw", "raw"),
    3: ("contentEncoding", "string"),
    4: ("contentType", "string"),
}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def fields(data: bytes) -> list[tuple[int, int, Any]]:
    """The (field number, wire type, value) triples of one message; length-delimited values stay bytes."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ProtobufError(f"field {number}: truncated")
            value, pos = data[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ProtobufError(f"field {number}: unsupported wire type {wire}")
        out.append((number, wire, value))
    return out


def _map_entry(data: bytes, binary: bool) -> tuple[str, str]:
    key, value = "", b""
    for number, _, raw in fields(data):
        if number == 1:
            key = bytes(raw).decode()
        elif number == 2:
            value = bytes(raw)
    return key, base64.b64encode(value).decode() if binary else value.decode()


def _decode(data: bytes, schema: Schema, where: str) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for number, _, raw in fields(data):
        if raw in (b"", 0):
            continue  # Go writes empty strings and zero numbers of non-pointer fields: they mean "not set"
        if number not in schema:
            raise ProtobufError(f"{where}: field {number} is not supported in protobuf bodies; send JSON instead")
        name, kind = schema[number]
        path = f"{where}.{name}" if where else name
        if kind == "string":
            obj[name] = bytes(raw).decode()
        elif kind == "raw":
            obj[name] = bytes(raw)
        elif kind == "int":
            obj[name] = raw
        elif kind == "bool":
            obj[name] = bool(raw)
        elif kind in ("map", "bytesmap"):
            key, value = _map_entry(bytes(raw), kind == "bytesmap")
            obj.setdefault(name, {})[key] = value
        elif kind == "strings":
            obj.setdefault(name, []).append(bytes(raw).decode())
        elif kind == "time":
            stamp = _decode(bytes(raw), TIME, path)
            moment = dt.datetime.fromtimestamp(stamp.get("seconds", 0), dt.UTC)
            obj[name] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif isinstance(kind, tuple):
            obj.setdefault(name, []).append(_decode(bytes(raw), kind[1], path))
        else:
            obj[name] = _decode(bytes(raw), kind, path)
    return obj


def decode_object(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf-encoded Kubernetes object of a supported kind."""
    if not body.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf object (missing the k8s\\0 prefix)")
    envelope = _decode(body[len(MAGIC) :], UNKNOWN, "")
    type_meta = envelope.get("typeMeta") or {}
    kind = type_meta.get("kind", "")
    schema = SCHEMAS.get(kind)
    if schema is None:
        supported = ", ".join(sorted(SCHEMAS))
        raise ProtobufError(f"protobuf bodies are read for {supported} only, not {kind or 'this kind'}; send JSON")
    obj = _decode(envelope.get("raw", b""), schema, "")
    return {"apiVersion": type_meta.get("apiVersion", "v1"), "kind": kind, **obj}

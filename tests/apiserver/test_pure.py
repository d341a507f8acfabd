"""The apiserver's pure parts, without I/O: selectors, patches, schema validation, protobuf bodies, tables."""

from __future__ import annotations

import datetime as dt

import pytest

from kubeedge.plugins.apiserver.patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from kubeedge.plugins.apiserver.protobuf import ProtobufError, decode_object
from kubeedge.plugins.apiserver.resources import Registry
from kubeedge.plugins.apiserver.selectors import SelectorError, parse_field_selector, parse_label_selector
from kubeedge.plugins.apiserver.tables import age
from kubeedge.plugins.apiserver.validation import SchemaValidator, validate_metadata


def labelled(**labels: str) -> dict:
    return {"metadata": {"labels": labels}}


def test_label_selectors() -> None:
    select = parse_label_selector("app=web,tier in (front, back),!legacy,env!=prod")
    assert select is not None
    assert select(labelled(app="web", tier="front"))
    assert select(labelled(app="web", tier="back", env="dev"))
    assert not select(labelled(app="web", tier="front", legacy="1"))
    assert not select(labelled(app="web", tier="middle"))
    assert not select(labelled(app="web", tier="front", env="prod"))
    exists = parse_label_selector("gpu")
    assert exists is not None and exists(labelled(gpu="")) and not exists(labelled())
    assert parse_label_selector("") is None
    with pytest.raises(SelectorError):
        parse_label_selector("bad key=1")


def test_field_selectors() -> None:
    select = parse_field_selector("spec.nodeName=edge-1,status.phase!=Failed")
    assert select is not None
    assert select({"spec": {"nodeName": "edge-1"}, "status": {"phase": "Running"}})
    assert not select({"spec": {"nodeName": "edge-1"}, "status": {"phase": "Failed"}})
    assert not select({"spec": {}})
    with pytest.raises(SelectorError):
        parse_field_selector("nonsense")


def test_merge_and_json_patch() -> None:
    doc = {"a": {"b": 1, "c": 2}, "list": [1, 2]}
    assert merge_patch(doc, {"a": {"b": None, "d": 3}, "list": [9]}) == {"a": {"c": 2, "d": 3}, "list": [9]}
    patched = json_patch(
        doc,
        [
            {"op": "add", "path": "/list/-", "value": 3},
            {"op": "replace", "path": "/a/b", "value": 5},
            {"op": "remove", "path": "/a/c"},
            {"op": "copy", "from": "/a", "path": "/z"},
        ],
    )
    assert patched == {"a": {"b": 5}, "list": [1, 2, 3], "z": {"b": 5}}
    assert doc == {"a": {"b": 1, "c": 2}, "list": [1, 2]}  # the original is untouched
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "test", "path": "/a/b", "value": 7}])
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "remove", "path": "/missing"}])


def test_strategic_merge_patch_merges_lists_by_key() -> None:
    pod = {
        "spec": {
            "containers": [
                {"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}]},
                {"name": "b", "image": "y"},
            ],
            "finalizers": ["f1"],
        }
    }
    patch = {
        "spec": {
            "containers": [{"name": "a", "env": [{"name": "B", "value": "2"}]}, {"name": "b", "$patch": "delete"}],
            "$setElementOrder/containers": [{"name": "a"}],
            "finalizers": ["f2"],
        }
    }
    merged = strategic_merge_patch(pod, patch)
    assert merged["spec"]["containers"] == [
        {"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}
    ]
    assert merged["spec"]["finalizers"] == ["f1", "f2"]
    assert strategic_merge_patch({"spec": {"x": 1}}, {"spec": {"$patch": "replace", "y": 2}}) == {"spec": {"y": 2}}


def test_crd_schema_validation_and_unknown_fields() -> None:
    rtype = Registry.default().lookup("devices.kubeedge.io", "v1beta1", "devices")
    assert rtype is not None
    validator = SchemaValidator(rtype.schemas["v1beta1"])
    obj = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": "d"},
        "spec": {"nodeName": 3, "extra": True, "protocol": {"configData": {"anything": {"goes": 1}}}},
    }
    errors = validator.errors(obj)
    assert [(e.field, e.reason) for e in errors] == [("spec.nodeName", "FieldValueTypeInvalid")]
    assert validator.unknown_fields(obj) == ["spec.extra"]  # configData preserves unknown fields
    assert "extra" not in validator.prune(obj)["spec"]
    assert [e.field for e in validate_metadata({"metadata": {"name": "Not_Valid"}})] == ["metadata.name"]
    assert [e.field for e in validate_metadata({"metadata": {"name": "ok", "labels": {"a": 1}}})] == [
        "metadata.labels.a"
    ]


def test_protobuf_bodies() -> None:
    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2, len(payload)]) + payload

    entry = field(1, b"mode") + field(2, b"fast")
    raw = field(1, field(1, b"settings")) + field(2, entry)
    envelope = b"k8s\x00" + field(1, field(1, b"v1") + field(2, b"ConfigMap")) + field(2, raw)
    assert decode_object(envelope) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings"},
        "data": {"mode": "fast"},
    }
    with pytest.raises(ProtobufError, match="k8s"):
        decode_object(b"{}")
    unsupported = b"k8s\x00" + field(1, field(1, b"v1") + field(2, b"Pod")) + field(2, b"")
    with pytest.raises(ProtobufError, match="not Pod"):
        decode_object(unsupported)
    unknown_field = b"k8s\x00" + field(1, field(1, b"v1") + field(2, b"ConfigMap")) + field(2, field(9, b"x"))
    with pytest.raises(ProtobufError, match="field 9"):
        decode_object(unknown_field)


def test_age() -> None:
    now = dt.datetime(2026, 1, 2, 12, 0, 0, tzinfo=dt.UTC)
    assert age("2026-01-02T11:59:30Z", now) == "30s"
    assert age("2026-01-02T11:55:00Z", now) == "5m"
    assert age("2026-01-02T09:30:00Z", now) == "150m"
    assert age("2026-01-01T12:00:00Z", now) == "24h"
    assert age("2025-12-29T12:00:00Z", now) == "4d"
    assert age(None) == "<unknown>"

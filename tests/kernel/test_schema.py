"""The kernel's lean JSON Schema check agrees with jsonschema on the keywords it handles."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from kubeedge.schema import first_violation

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["port"],
    "additionalProperties": False,
    "properties": {
        "port": {"type": "integer", "minimum": 0, "maximum": 65535},
        "mode": {"enum": [0, 1, 2, "internal", "both", "external"]},
        "name": {"type": "string", "minLength": 1, "maxLength": 8, "pattern": "^[a-z]+$"},
        "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "anything": {"type": ["string", "null"]},
    },
}

CASES: list[tuple[Any, list[str] | None]] = [
    ({"port": 1}, None),
    (
        {"port": 1, "mode": "both", "name": "ab", "ratio": 0.5, "tags": ["x"], "labels": {"a": "b"}, "anything": None},
        None,
    ),
    ({"port": 1.0}, None),  # JSON Schema integers include 1.0
    ({}, []),
    ({"port": True}, ["port"]),
    ({"port": 70000}, ["port"]),
    ({"port": -1}, ["port"]),
    ({"port": 1, "mode": 3}, ["mode"]),
    ({"port": 1, "name": ""}, ["name"]),
    ({"port": 1, "name": "abcdefghi"}, ["name"]),
    ({"port": 1, "name": "A"}, ["name"]),
    ({"port": 1, "ratio": 0}, ["ratio"]),
    ({"port": 1, "ratio": 1}, ["ratio"]),
    ({"port": 1, "tags": []}, ["tags"]),
    ({"port": 1, "tags": ["a", "b", "c"]}, ["tags"]),
    ({"port": 1, "tags": ["a", 2]}, ["tags", "1"]),
    ({"port": 1, "labels": {"a": 1}}, ["labels", "a"]),
    ({"port": 1, "anything": 5}, ["anything"]),
    ({"port": 1, "colour": "red"}, ["colour"]),
    ("not an object", []),
]


@pytest.mark.parametrize(("instance", "path"), CASES)
def test_agrees_with_jsonschema(instance: Any, path: list[str] | None) -> None:
    violation = first_violation(instance, SCHEMA)
    reference_valid = jsonschema.Draft202012Validator(SCHEMA).is_valid(instance)
    assert (violation is None) == reference_valid
    if path is not None:
        assert violation is not None and violation.path == path


def test_other_keywords_are_left_to_jsonschema() -> None:
    schema = {"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}}
    assert first_violation({"a": 1}, schema) is None
    violation = first_violation({"a": 1.5}, schema)
    assert violation is not None and violation.path == ["a"]


REF_SCHEMA: dict[str, Any] = {
    "$id": "https://example.org/s.json",
    "$defs": {"port": {"type": "integer", "minimum": 1, "maximum": 65535}},
    "type": "object",
    "description": "either ip or serialPort",
    "anyOf": [{"required": ["ip"]}, {"required": ["serialPort"]}],
    "properties": {"ip": {"type": "string"}, "serialPort": {"type": "string"}, "port": {"$ref": "#/$defs/port"}},
}


@pytest.mark.parametrize(
    ("instance", "path"),
    [
        ({"ip": "h"}, None),
        ({"serialPort": "/dev/x", "port": 502}, None),
        ({"port": 502}, []),
        ({"ip": "h", "port": 0}, ["port"]),
        ({"ip": "h", "port": "1"}, ["port"]),
    ],
)
def test_local_refs_and_anyof_agree_with_jsonschema(instance: Any, path: list[str] | None) -> None:
    violation = first_violation(instance, REF_SCHEMA)
    assert (violation is None) == jsonschema.Draft202012Validator(REF_SCHEMA).is_valid(instance)
    if path is not None:
        assert violation is not None and violation.path == path
    if path == []:
        assert violation is not None and violation.message == "either ip or serialPort"

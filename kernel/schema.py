"""JSON Schema validation for profiles and plugin config sections, without a heavy import on small nodes.

The keywords profiles and plugin configs use are checked here directly (the ``jsonschema`` package costs
about 3 MB of RSS to import, a tenth of a Pi's budget). A schema that uses any other keyword is handed
to ``jsonschema`` (draft 2020-12), so plugin authors may write any valid schema.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

__all__ = ["SchemaViolation", "first_violation"]

_HANDLED = {
    "type", "properties", "required", "additionalProperties", "enum", "const", "pattern", "minLength",
    "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "items", "minItems", "maxItems",
    "title", "description", "default", "examples", "$schema", "$comment", "format", "$id", "$defs", "$ref",
    "anyOf",
}  # fmt: skip

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


class SchemaViolation:
    """The first way an instance fails its schema: ``path`` (a list of keys) and ``message``."""

    def __init__(self, path: list[str], message: str) -> None:
        self.path = path
        self.message = message


def first_violation(instance: Any, schema: dict[str, Any]) -> SchemaViolation | None:
    """Return the first violation of ``schema`` by ``instance``, or None when it is valid."""
    if _uses_only_handled(schema, schema):
        return next(_check(instance, schema, [], schema), None)
    return _with_jsonschema(instance, schema)


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    """A local ``$ref`` (``#/$defs/name``); anything else is not handled here."""
    if not ref.startswith("#/"):
        return None
    target: Any = root
    for part in ref[2:].split("/"):
        if not isinstance(target, dict) or part not in target:
            return None
        target = target[part]
    return target


def _uses_only_handled(schema: Any, root: dict[str, Any], seen: frozenset[str] = frozenset()) -> bool:
    if not isinstance(schema, dict):
        return isinstance(schema, bool)
    if set(schema) - _HANDLED:
        return False
    children: list[Any] = list((schema.get("properties") or {}).values())
    for key in ("additionalProperties", "items"):
        if isinstance(schema.get(key), dict):
            children.append(schema[key])
    children += list(schema.get("anyOf") or [])
    ref = schema.get("$ref")
    if ref is not None:
        if ref in seen or _resolve(ref, root) is None:
            return False  # recursive or remote references are jsonschema's job
        return _uses_only_handled(_resolve(ref, root), root, seen | {ref}) and all(
            _uses_only_handled(child, root, seen) for child in children
        )
    return all(_uses_only_handled(child, root, seen) for child in children)


def _is_type(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(name, ()))


def _check(value: Any, schema: Any, path: list[str], root: dict[str, Any]) -> Iterator[SchemaViolation]:
    if schema is False:
        yield SchemaViolation(path, "no value is allowed here")
        return
    if not isinstance(schema, dict):
        return
    if "$ref" in schema:
        yield from _check(value, _resolve(schema["$ref"], root), path, root)
    if "anyOf" in schema and not any(next(_check(value, s, path, root), None) is None for s in schema["anyOf"]):
        yield SchemaViolation(path, schema.get("description") or "matches none of the allowed forms")
        return
    expected = schema.get("type")
    if expected is not None:
        names = expected if isinstance(expected, list) else [expected]
        if not any(_is_type(value, n) for n in names):
            yield SchemaViolation(path, f"expected {' or '.join(names)}, got {type(value).__name__} {value!r}")
            return
    if "enum" in schema and value not in schema["enum"]:
        yield SchemaViolation(path, f"expected one of {', '.join(map(repr, schema['enum']))}, got {value!r}")
    if "const" in schema and value != schema["const"]:
        yield SchemaViolation(path, f"expected {schema['const']!r}, got {value!r}")
    if isinstance(value, str):
        yield from _check_string(value, schema, path)
    if isinstance(value, int | float) and not isinstance(value, bool):
        yield from _check_number(value, schema, path)
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            yield SchemaViolation(path, f"expected at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            yield SchemaViolation(path, f"expected at most {schema['maxItems']} items")
        for index, item in enumerate(value):
            yield from _check(item, schema.get("items", True), [*path, str(index)], root)
    if isinstance(value, dict):
        yield from _check_object(value, schema, path, root)


def _check_string(value: str, schema: dict[str, Any], path: list[str]) -> Iterator[SchemaViolation]:
    if len(value) < schema.get("minLength", 0):
        yield SchemaViolation(path, f"expected at least {schema['minLength']} characters")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        yield SchemaViolation(path, f"expected at most {schema['maxLength']} characters")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        yield SchemaViolation(path, f"{value!r} does not match {schema['pattern']!r}")


def _check_number(value: float, schema: dict[str, Any], path: list[str]) -> Iterator[SchemaViolation]:
    if "minimum" in schema and value < schema["minimum"]:
        yield SchemaViolation(path, f"expected at least {schema['minimum']}, got {value}")
    if "maximum" in schema and value > schema["maximum"]:
        yield SchemaViolation(path, f"expected at most {schema['maximum']}, got {value}")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        yield SchemaViolation(path, f"expected more than {schema['exclusiveMinimum']}, got {value}")
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        yield SchemaViolation(path, f"expected less than {schema['exclusiveMaximum']}, got {value}")


def _check_object(
    value: dict[str, Any], schema: dict[str, Any], path: list[str], root: dict[str, Any]
) -> Iterator[SchemaViolation]:
    properties = schema.get("properties") or {}
    for key in schema.get("required", []):
        if key not in value:
            yield SchemaViolation(path, f"{key!r} is a required property")
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            yield from _check(item, properties[key], [*path, str(key)], root)
        elif extra is False:
            allowed = ", ".join(sorted(properties)) or "none"
            yield SchemaViolation([*path, str(key)], f"unknown key (allowed: {allowed})")
        else:
            yield from _check(item, extra, [*path, str(key)], root)


def _with_jsonschema(instance: Any, schema: dict[str, Any]) -> SchemaViolation | None:
    import jsonschema

    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(instance))
    if not errors:
        return None
    error = jsonschema.exceptions.best_match(errors) or errors[0]
    path = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties":
        return SchemaViolation(path, f"unknown key ({error.message})")
    return SchemaViolation(path, str(error.message))

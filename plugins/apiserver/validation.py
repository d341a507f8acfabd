"""Validation of objects before they are stored (pure functions).

Custom resources are checked against their CRD's ``openAPIV3Schema`` (jsonschema, with the OpenAPI and
``x-kubernetes-*`` extensions mapped onto JSON Schema); fields the schema does not declare are found
as a structural schema would prune them. Every problem is a :class:`FieldError` carrying the field path
in Kubernetes' spelling (``spec.properties[0].name``), so the API answers 422 with a ``Status`` naming it.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["FieldError", "SchemaValidator", "validate_metadata"]

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass(frozen=True)
class FieldError:
    field: str
    reason: str  # Kubernetes' cause type: FieldValueRequired, FieldValueInvalid, ...
    message: str

    def cause(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def validate_metadata(obj: dict[str, Any], *, namespaced_name_label: bool = False) -> list[FieldError]:
    """Name, labels and annotations shape, as every Kubernetes type checks them."""
    errors: list[FieldError] = []
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return [FieldError("metadata", "FieldValueRequired", "Required value")]
    name = meta.get("name")
    if not name:
        errors.append(
            FieldError("metadata.name", "FieldValueRequired", "Required value: name or generateName is required")
        )
    elif not isinstance(name, str):
        errors.append(FieldError("metadata.name", "FieldValueInvalid", f"Invalid value: {name!r}: must be a string"))
    else:
        pattern = DNS_LABEL if namespaced_name_label else DNS_SUBDOMAIN
        if len(name) > 253 or not pattern.match(name):
            errors.append(
                FieldError(
                    "metadata.name",
                    "FieldValueInvalid",
                    f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric'
                    " characters, '-' or '.', and must start and end with an alphanumeric character",
                )
            )
    for section in ("labels", "annotations"):
        values = meta.get(section)
        if values is None:
            continue
        if not isinstance(values, dict):
            errors.append(
                FieldError(f"metadata.{section}", "FieldValueTypeInvalid", "Invalid value: must be an object")
            )
            continue
        for key, value in values.items():
            if not isinstance(value, str):
                errors.append(
                    FieldError(f"metadata.{section}.{key}", "FieldValueTypeInvalid", "Invalid value: must be a string")
                )
            elif section == "labels" and (len(value) > 63 or not LABEL_VALUE.match(value)):
                errors.append(
                    FieldError(
                        f"metadata.labels.{key}",
                        "FieldValueInvalid",
                        f'Invalid value: "{value}": a valid label'
                        " must be 63 characters or less and consist of alphanumerics, '-', '_' or '.'",
                    )
                )
    return errors


def _to_json_schema(schema: Any) -> Any:
    """Map an OpenAPI v3 (Kubernetes flavour) schema onto JSON Schema draft 7."""
    if isinstance(schema, list):
        return [_to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: _to_json_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict | list):
            out[key] = _to_json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = _to_json_schema(value)
        elif key in ("format", "description", "example", "externalDocs") or key.startswith("x-kubernetes-"):
            continue
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.pop("anyOf", None)
        out["type"] = ["integer", "string"]
    if schema.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
    out.pop("nullable", None)
    return out


class SchemaValidator:
    """One CRD version's schema: validation errors and undeclared fields of an object."""

    def __init__(self, schema: dict[str, Any]) -> None:
        import jsonschema

        self.schema = schema
        converted = _to_json_schema(copy.deepcopy(schema))
        # metadata is ObjectMeta, checked by validate_metadata; the CRD says only "type: object".
        converted.get("properties", {}).pop("metadata", None)
        self._validator = jsonschema.Draft7Validator(converted)

    def errors(self, obj: dict[str, Any]) -> list[FieldError]:
        found: list[FieldError] = []
        for error in sorted(self._validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
            path = list(error.absolute_path)
            if error.validator == "required":
                missing = re.search(r"'([^']+)' is a required property", error.message)
                field = _path([*path, missing.group(1)] if missing else path)
                found.append(FieldError(field, "FieldValueRequired", "Required value"))
            elif error.validator == "type":
                expected = error.validator_value
                got = _json_type(error.instance)
                field = _path(path)
                found.append(
                    FieldError(
                        field,
                        "FieldValueTypeInvalid",
                        f'Invalid value: "{got}": {field} in body must be of type {_type_words(expected)}: "{got}"',
                    )
                )
            elif error.validator == "enum":
                supported = ", ".join(f'"{v}"' for v in error.validator_value)
                found.append(
                    FieldError(
                        _path(path),
                        "FieldValueNotSupported",
                        f'Unsupported value: "{error.instance}": supported values: {supported}',
                    )
                )
            else:
                found.append(FieldError(_path(path), "FieldValueInvalid", f"Invalid value: {error.message}"))
        return found

    def unknown_fields(self, obj: dict[str, Any]) -> list[str]:
        """Paths of fields the schema does not declare (what a structural schema prunes)."""
        unknown: list[str] = []
        _walk_unknown(obj, self.schema, [], unknown, root=True)
        return unknown

    def prune(self, obj: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``obj`` without the undeclared fields."""
        pruned = copy.deepcopy(obj)
        _walk_prune(pruned, self.schema, root=True)
        return pruned


def _declared(schema: dict[str, Any], root: bool) -> tuple[set[str] | None, Any]:
    """(declared property names or None when anything goes, the schema for extra keys)."""
    if schema.get("x-kubernetes-preserve-unknown-fields") or schema.get("x-kubernetes-embedded-resource"):
        return None, None
    additional = schema.get("additionalProperties")
    if isinstance(additional, dict):
        return set(schema.get("properties") or {}), additional
    if additional is True or "properties" not in schema:
        return None, None
    names = set(schema.get("properties") or {})
    if root:
        names |= {"apiVersion", "kind", "metadata"}
    return names, None


def _walk_unknown(value: Any, schema: Any, path: list[Any], out: list[str], root: bool = False) -> None:
    if not isinstance(schema, dict):
        return
    if isinstance(value, dict):
        declared, extra = _declared(schema, root)
        props = schema.get("properties") or {}
        for key, child in value.items():
            if root and key == "metadata":
                continue
            if key in props:
                _walk_unknown(child, props[key], [*path, key], out)
            elif extra is not None:
                _walk_unknown(child, extra, [*path, key], out)
            elif declared is not None and key not in declared:
                out.append(_path([*path, key]))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            _walk_unknown(item, schema["items"], [*path, index], out)


def _walk_prune(value: Any, schema: Any, root: bool = False) -> None:
    if not isinstance(schema, dict):
        return
    if isinstance(value, dict):
        declared, extra = _declared(schema, root)
        props = schema.get("properties") or {}
        for key in list(value):
            if root and key == "metadata":
                continue
            if key in props:
                _walk_prune(value[key], props[key])
            elif extra is not None:
                _walk_prune(value[key], extra)
            elif declared is not None and key not in declared:
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _walk_prune(item, schema["items"])


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_words(expected: Any) -> str:
    if isinstance(expected, list):
        return "/".join(str(e) for e in expected if e != "null")
    return str(expected)


def validate_builtin(kind: str, obj: dict[str, Any]) -> list[FieldError]:
    """The few checks of built-in types that clients rely on being refused."""
    errors: list[FieldError] = []
    spec = obj.get("spec")
    if kind == "Pod":
        containers = (spec or {}).get("containers") if isinstance(spec, dict) else None
        if not isinstance(containers, list) or not containers:
            errors.append(FieldError("spec.containers", "FieldValueRequired", "Required value"))
        else:
            for index, container in enumerate(containers):
                if not isinstance(container, dict):
                    errors.append(FieldError(f"spec.containers[{index}]", "FieldValueTypeInvalid", "must be an object"))
                    continue
                if not container.get("name"):
                    errors.append(FieldError(f"spec.containers[{index}].name", "FieldValueRequired", "Required value"))
                if not container.get("image"):
                    errors.append(FieldError(f"spec.containers[{index}].image", "FieldValueRequired", "Required value"))
    elif kind == "Deployment":
        if not isinstance(spec, dict):
            errors.append(FieldError("spec", "FieldValueRequired", "Required value"))
            return errors
        selector = spec.get("selector")
        if not isinstance(selector, dict) or not (selector.get("matchLabels") or selector.get("matchExpressions")):
            errors.append(FieldError("spec.selector", "FieldValueRequired", "Required value"))
        template: dict[str, Any] = spec["template"] if isinstance(spec.get("template"), dict) else {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        wanted = (selector or {}).get("matchLabels") or {} if isinstance(selector, dict) else {}
        if any(labels.get(k) != v for k, v in wanted.items()):
            errors.append(
                FieldError(
                    "spec.template.metadata.labels",
                    "FieldValueInvalid",
                    f"Invalid value: {labels!r}: `selector` does not match template `labels`",
                )
            )
        replicas = spec.get("replicas")
        if replicas is not None and (not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0):
            errors.append(
                FieldError(
                    "spec.replicas", "FieldValueInvalid", f"Invalid value: {replicas!r}: must be an integer >= 0"
                )
            )
        pod_spec = template.get("spec")
        errors += [
            FieldError(f"spec.template.{e.field}", e.reason, e.message)
            for e in validate_builtin("Pod", {"spec": pod_spec})
        ]
    elif kind in ("ConfigMap", "Secret"):
        for section in ("data", "binaryData", "stringData"):
            values = obj.get(section)
            if values is None:
                continue
            if not isinstance(values, dict):
                errors.append(FieldError(section, "FieldValueTypeInvalid", "Invalid value: must be an object"))
                continue
            for key, value in values.items():
                if not isinstance(value, str):
                    errors.append(
                        FieldError(f"{section}.{key}", "FieldValueTypeInvalid", "Invalid value: must be a string")
                    )
    return errors

"""Label and field selectors in Kubernetes' query syntax, parsed into predicates (pure functions).

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a`` (exists), ``!a``.
Field selectors: ``path=value``, ``path==value``, ``path!=value`` on any dotted path of the object
(``metadata.name``, ``metadata.namespace``, ``spec.nodeName``, ``status.phase``, ``involvedObject.uid``...).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["SelectorError", "field_value", "parse_field_selector", "parse_label_selector"]

Predicate = Callable[[dict[str, Any]], bool]

_KEY = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


class SelectorError(ValueError):
    """A selector that does not parse; the text quotes the bad part."""


@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        # "!=" and "notin" match objects without the label, as Kubernetes does.
        return not present or labels[self.key] not in self.values


def _split_top(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _check_key(key: str, whole: str) -> str:
    if not _KEY.match(key):
        raise SelectorError(f"invalid label key {key!r} in selector {whole!r}")
    return key


def parse_label_selector(text: str | None) -> Predicate | None:
    """A predicate over an object's ``metadata.labels``; None when the selector is empty."""
    if not text or not text.strip():
        return None
    requirements: list[_Requirement] = []
    for part in _split_top(text):
        set_match = re.match(r"^(\S+)\s+(in|notin)\s*\((.*)\)$", part)
        if set_match:
            key, op, values = set_match.groups()
            items = frozenset(v.strip() for v in values.split(",") if v.strip())
            requirements.append(_Requirement(_check_key(key, text), op, items))
            continue
        for op in ("==", "!=", "="):
            if op in part:
                key, _, value = part.partition(op)
                requirements.append(
                    _Requirement(_check_key(key.strip(), text), "!=" if op == "!=" else "=", frozenset([value.strip()]))
                )
                break
        else:
            if part.startswith("!"):
                requirements.append(_Requirement(_check_key(part[1:].strip(), text), "!"))
            else:
                requirements.append(_Requirement(_check_key(part, text), "exists"))

    def predicate(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(r.matches(labels) for r in requirements)

    return predicate


def field_value(obj: dict[str, Any], path: str) -> str:
    """The value at a dotted path, as the string a field selector compares with ("" when absent)."""
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, dict):
            return ""
        value = value.get(part)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_field_selector(text: str | None) -> Predicate | None:
    """A predicate over the whole object; None when the selector is empty."""
    if not text or not text.strip():
        return None
    terms: list[tuple[str, bool, str]] = []
    for part in _split_top(text):
        for op in ("==", "!=", "="):
            if op in part:
                path, _, value = part.partition(op)
                path = path.strip()
                if not path or not re.match(r"^[A-Za-z0-9_.]+$", path):
                    raise SelectorError(f"invalid field path {path!r} in field selector {text!r}")
                terms.append((path, op != "!=", value.strip().replace("\\,", ",")))
                break
        else:
            raise SelectorError(f"invalid field selector {part!r}: expected path=value or path!=value")

    def predicate(obj: dict[str, Any]) -> bool:
        return all((field_value(obj, path) == value) is equal for path, equal, value in terms)

    return predicate

"""Pure value handling: raw device values to the model's property type and back, and range checks.

A reported value is ``raw * scale + valueOffset`` converted to the DeviceModel property type and written
as KubeEdge's twin string. A desired value goes the other way: parsed from the twin string, checked
against the model's minimum/maximum, then ``(value - valueOffset) / scale``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .driver import WriteRefused

__all__ = [
    "TWIN_TYPES",
    "Span",
    "check_range",
    "coalesce",
    "format_value",
    "from_device",
    "parse_value",
    "to_device",
]

#: DeviceModel property types (v1beta1 spells them upper-case) -> twin metadata type.
TWIN_TYPES = {
    "int": "int",
    "float": "float",
    "double": "double",
    "string": "string",
    "boolean": "boolean",
    "bool": "boolean",
    "bytes": "bytes",
    "stream": "string",
}
NUMERIC = ("int", "float", "double")


def from_device(raw: Any, kind: str, *, scale: float = 1.0, offset: float = 0.0) -> Any:
    """Convert a driver's raw value to the property type ``kind`` (scale/offset applied to numbers)."""
    if kind in NUMERIC:
        if isinstance(raw, (bytes, bytearray)):
            raise ValueError(f"got bytes {bytes(raw)!r} for a {kind} property")
        if isinstance(raw, str):
            raw = float(raw.strip())
        number = float(raw) if not isinstance(raw, bool) else float(int(raw))
        if scale != 1.0 or offset != 0.0:
            # 12 significant digits drop the binary noise of the multiplication (214 * 0.1 is
            # 21.400000000000002) and keep everything a 64-bit register can carry after scaling.
            number = float(f"{number * scale + offset:.12g}")
        if kind == "int":
            if not math.isfinite(number):
                raise ValueError(f"{number} is not an integer")
            return round(number)
        return number
    if kind == "boolean":
        if isinstance(raw, str):
            return _parse_bool(raw)
        return bool(raw)
    if kind == "bytes":
        return bytes(raw) if isinstance(raw, (bytes, bytearray)) else str(raw).encode()
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw).decode("utf-8", "replace").rstrip("\x00")
    return str(raw)


def format_value(value: Any, kind: str) -> str:
    """KubeEdge twins carry every value as a string."""
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "bytes":
        return base64.b64encode(value).decode()
    if kind in ("float", "double"):
        number = float(value)
        return str(int(number)) if number.is_integer() and abs(number) < 1e15 else repr(number)
    return str(value)


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "on", "yes"):
        return True
    if lowered in ("false", "0", "off", "no"):
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false)")


def parse_value(text: Any, kind: str) -> Any:
    """Parse a desired twin value; raise :class:`WriteRefused` naming what was expected."""
    raw = text if isinstance(text, str) else str(text)
    try:
        if kind == "int":
            number = float(raw.strip())
            if not number.is_integer():
                raise ValueError
            return int(number)
        if kind in ("float", "double"):
            number = float(raw.strip())
            if not math.isfinite(number):
                raise ValueError
            return number
        if kind == "boolean":
            return _parse_bool(raw)
        if kind == "bytes":
            return base64.b64decode(raw, validate=True)
    except ValueError:
        raise WriteRefused(f"{raw!r} is not a valid {kind}") from None
    return raw


def check_range(value: Any, minimum: float | None, maximum: float | None) -> str | None:
    """The reason a value is out of the model's range, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if minimum is not None and value < minimum:
        return f"{value} is below the minimum {_plain(minimum)}"
    if maximum is not None and value > maximum:
        return f"{value} is above the maximum {_plain(maximum)}"
    return None


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def to_device(value: Any, *, scale: float = 1.0, offset: float = 0.0) -> Any:
    """Undo scale/offset for a write (numbers only)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if scale == 1.0 and offset == 0.0:
        return value
    if scale == 0:
        raise WriteRefused("the visitor's scale is 0: the value cannot be written back")
    return (value - offset) / scale


# -- coalescing -----------------------------------------------------------------------------------------

T = TypeVar("T")


@dataclass
class Span:
    """One request covering several points: ``area`` (e.g. a Modbus table), first address, count."""

    area: Any
    start: int
    count: int
    items: list[Any]


def coalesce(
    items: Iterable[T],
    address: Callable[[T], tuple[Any, int, int]],
    *,
    max_count: int,
    max_gap: int = 0,
    enabled: bool = True,
) -> list[Span]:
    """Group items whose ``(area, start, count)`` ranges are adjacent (or ``max_gap`` apart) into spans.

    A span never exceeds ``max_count`` addresses (the protocol's limit per request). With ``enabled``
    false every item is its own span: the same code path, one request per point.
    """
    located = [(address(item), item) for item in items]
    if not enabled:
        return [Span(area, start, count, [item]) for (area, start, count), item in located]
    spans: list[Span] = []
    by_area: dict[Any, list[tuple[int, int, T]]] = {}
    for (area, start, count), item in located:
        by_area.setdefault(area, []).append((start, count, item))
    for area, entries in by_area.items():
        entries.sort(key=lambda entry: (entry[0], entry[1]))
        current: Span | None = None
        for start, count, item in entries:
            if current is not None:
                end = current.start + current.count
                new_end = max(end, start + count)
                if start <= end + max_gap and new_end - current.start <= max_count:
                    current.count = new_end - current.start
                    current.items.append(item)
                    continue
            current = Span(area, start, count, [item])
            spans.append(current)
    return spans


def chunk(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]

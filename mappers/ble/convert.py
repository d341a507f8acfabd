"""BLE value conversion (pure): v1alpha2's dataConverter, and plain GATT values.

dataConverter: take the bytes from ``startIndex`` to ``endIndex`` (both included; ``startIndex`` greater
than ``endIndex`` walks backwards, which reads a little-endian field), read them as one unsigned integer
with the first taken byte most significant, shift it left or right, then apply ``orderOfOperations``
(Add, Subtract, Multiply, Divide) in order. Without a converter, numbers are little-endian unsigned
integers (the GATT convention) and strings UTF-8.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Converter", "decode_plain", "encode_plain"]


@dataclass(frozen=True)
class Converter:
    start: int | None = None
    end: int | None = None
    shift_left: int = 0
    shift_right: int = 0
    operations: tuple[tuple[str, float], ...] = ()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Converter:
        operations = tuple(
            (str(op["operationType"]), float(op["operationValue"])) for op in config.get("orderOfOperations") or []
        )
        for kind, value in operations:
            if kind not in ("Add", "Subtract", "Multiply", "Divide"):
                raise ValueError(f"unknown operationType {kind!r}")
            if kind == "Divide" and value == 0:
                raise ValueError("dataConverter divides by 0")
        return cls(
            config.get("startIndex"),
            config.get("endIndex"),
            int(config.get("shiftLeft") or 0),
            int(config.get("shiftRight") or 0),
            operations,
        )

    def read(self, data: bytes) -> float:
        start = 0 if self.start is None else self.start
        end = len(data) - 1 if self.end is None else self.end
        if max(start, end) >= len(data):
            raise IndexError(f"index {max(start, end)} is past the {len(data)} bytes received")
        taken = data[start : end + 1] if start <= end else data[end : start + 1][::-1]
        number = int.from_bytes(taken, "big")
        if self.shift_left:
            number <<= self.shift_left
        elif self.shift_right:
            number >>= self.shift_right
        result = float(number)
        for kind, value in self.operations:
            if kind == "Add":
                result += value
            elif kind == "Subtract":
                result -= value
            elif kind == "Multiply":
                result *= value
            else:
                result /= value
        return result


def decode_plain(data: bytes, kind: str) -> Any:
    if kind in ("int", "float", "double"):
        return int.from_bytes(data, "little") if data else 0
    if kind == "boolean":
        return any(data)
    if kind == "bytes":
        return data
    return data.decode("utf-8", "replace").rstrip("\x00")


def encode_plain(value: Any, kind: str, size: int | None) -> bytes:
    if kind == "boolean":
        return bytes([1 if value else 0])
    if kind in ("int", "float", "double"):
        number = round(float(value))
        if number < 0:
            raise ValueError(f"{number}: plain BLE values are unsigned (use dataWrite)")
        length = max(size or 1, (number.bit_length() + 7) // 8, 1)
        return number.to_bytes(length, "little")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return str(value).encode()

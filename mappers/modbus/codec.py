"""Modbus register codec: values to 16-bit registers and back (pure functions, no I/O).

Registers arrive big-endian with the most significant register first (Modbus's "ABCD"). ``byte_swap``
(the visitor's ``isSwap``) swaps the two bytes inside each register; ``word_swap`` (``isRegisterSwap``)
reverses the order of the registers.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

__all__ = ["REGISTERS", "decode", "encode", "register_count"]

#: registers each fixed-size type occupies, and its struct code.
REGISTERS = {
    "int16": 1,
    "uint16": 1,
    "boolean": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}
CODES = {
    "int16": "h",
    "uint16": "H",
    "boolean": "H",
    "int32": "i",
    "uint32": "I",
    "float32": "f",
    "int64": "q",
    "uint64": "Q",
    "float64": "d",
}
LIMITS = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


def register_count(data_type: str, limit: int | None) -> int:
    if data_type == "string":
        return limit or 1
    return REGISTERS[data_type]


def _order(raw: bytes, byte_swap: bool, word_swap: bool) -> bytes:
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if byte_swap:
        words = [w[::-1] for w in words]
    if word_swap:
        words.reverse()
    return b"".join(words)


def decode(registers: Sequence[int], data_type: str, *, byte_swap: bool = False, word_swap: bool = False) -> Any:
    raw = _order(struct.pack(f">{len(registers)}H", *registers), byte_swap, word_swap)
    if data_type == "string":
        return raw.rstrip(b"\x00").decode("utf-8", "replace").rstrip()
    code = CODES[data_type]
    (value,) = struct.unpack(">" + code, raw[: struct.calcsize(code)])
    if data_type == "boolean":
        return value != 0
    return value


def encode(value: Any, data_type: str, *, count: int, byte_swap: bool = False, word_swap: bool = False) -> list[int]:
    """Registers for ``value``; raises ValueError when it does not fit the type."""
    if data_type == "string":
        raw = str(value).encode()
        if len(raw) > count * 2:
            raise ValueError(f"{value!r} is longer than {count * 2} bytes")
        raw = raw.ljust(count * 2, b"\x00")
    else:
        if data_type == "boolean":
            number: Any = 1 if value else 0
        elif data_type.startswith("float"):
            number = float(value)
        else:
            number = round(float(value))
            low, high = LIMITS[data_type]
            if not low <= number <= high:
                raise ValueError(f"{number} does not fit {data_type} ({low}..{high})")
        raw = struct.pack(">" + CODES[data_type], number)
    raw = _order(raw, byte_swap, word_swap)
    return list(struct.unpack(f">{len(raw) // 2}H", raw))

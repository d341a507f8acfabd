"""Scaled register values are reported as a person would write them, not with binary float noise."""

from __future__ import annotations

import pytest

from kubeedge.mappers.sdk.convert import format_value, from_device


@pytest.mark.parametrize(
    ("raw", "scale", "offset", "reported"),
    [
        (214, 0.1, 0.0, "21.4"),
        (453, 0.1, 0.0, "45.3"),
        (7, 0.01, 0.0, "0.07"),
        (215, 0.1, -20.0, "1.5"),
        (1, 1.0, 0.0, "1"),
    ],
)
def test_scaled_values_have_no_float_noise(raw: int, scale: float, offset: float, reported: str) -> None:
    assert format_value(from_device(raw, "float", scale=scale, offset=offset), "float") == reported

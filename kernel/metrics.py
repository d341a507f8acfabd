"""Numbers modules keep about themselves, without importing a metrics library.

Modules count and observe through ``ctx.metrics``; the ``metrics`` plugin (when loaded) serves them, with
the bus's own numbers, in Prometheus' text format. A node without that plugin pays a few dict updates.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Metrics", "Sample"]

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    name: str
    kind: str  # "counter", "gauge" or "summary"
    help: str
    labels: Labels
    value: float
    count: int = 0  # summaries: number of observations (value is their sum)


class Metrics:
    def __init__(self) -> None:
        self._values: dict[tuple[str, Labels], float] = {}
        self._counts: dict[tuple[str, Labels], int] = {}
        self._kinds: dict[str, tuple[str, str]] = {}

    def _key(self, name: str, kind: str, help: str, labels: dict[str, str]) -> tuple[str, Labels]:
        known = self._kinds.setdefault(name, (kind, help))
        if known[0] != kind:
            raise ValueError(f"metric {name!r} is a {known[0]}, not a {kind}")
        return name, tuple(sorted((k, str(v)) for k, v in labels.items()))

    def inc(self, name: str, amount: float = 1.0, *, help: str = "", **labels: str) -> None:
        """Add to a counter (``name`` should end in ``_total``)."""
        key = self._key(name, "counter", help, labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def set(self, name: str, value: float, *, help: str = "", **labels: str) -> None:
        """Set a gauge."""
        self._values[self._key(name, "gauge", help, labels)] = value

    def observe(self, name: str, value: float, *, help: str = "", **labels: str) -> None:
        """Record one observation (e.g. a latency in seconds) in a summary: count and sum."""
        key = self._key(name, "summary", help, labels)
        self._values[key] = self._values.get(key, 0.0) + value
        self._counts[key] = self._counts.get(key, 0) + 1

    def value(self, name: str, **labels: str) -> float:
        return self._values.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))), 0.0)

    def samples(self) -> Iterator[Sample]:
        for (name, labels), value in sorted(self._values.items()):
            kind, help = self._kinds[name]
            yield Sample(name, kind, help, labels, value, self._counts.get((name, labels), 0))

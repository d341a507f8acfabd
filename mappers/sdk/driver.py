"""The driver contract: what a mapper plugin implements. Everything else is the SDK's.

A driver speaks one protocol to one device. The SDK creates one driver object per device and calls it in
this order, never concurrently (a device's calls are serialised):

1. ``Driver(device)``: cheap; keep the :class:`~kubeedge.mappers.sdk.device.DeviceConfig`, open nothing.
2. ``prepare(point)`` once per point: parse the point's visitor ``configData`` (already validated against
   the protocol's JSON Schema) into whatever the driver wants in ``point.prepared``; raise ``ValueError``
   to reject the point (it is then left out, with the reason logged).
3. ``connect()``: open the link. Raise :class:`DeviceUnreachable` (or let an ``OSError`` or timeout out)
   when the device cannot be reached: the SDK reports the device ``offline`` and calls ``connect`` again
   later, with backoff (0.5 s doubling to 30 s), on a fresh driver object after ``close``.
4. Then, any number of times, in any order:
   - ``read(points)`` -> one result per point, in order: the raw value, or a :class:`PointError` for a
     point the device refused (an exception response, a wrong type). A link-level failure raises.
     The batch holds every point due in one collect cycle; use :func:`~kubeedge.mappers.sdk.coalesce`
     to turn adjacent addresses into one request when ``self.coalesce`` is true.
   - ``write(writes)`` with ``[(point, raw value), ...]`` -> one ``None`` (done) or :class:`PointError` per
     item. The SDK has already parsed the desired value, checked it against the model's minimum/maximum
     and access mode, and undone scale/offset: out-of-range values never reach a driver.
   - ``health()`` -> ``True`` when the device is well; ``False`` makes the SDK report ``unhealthy``.
   - ``subscribe(points, emit)`` (push protocols only, points whose visitor asks for push): runs until
     cancelled, calling ``emit(point, raw value)`` for each change.
5. ``close()``: release everything; it is called after a failure too, and must not raise.

``discover(protocol_config)`` is an optional classmethod listing devices a protocol can find by itself.

Methods are asyncio coroutines by default (``flavor = "asyncio"``): pymodbus, asyncua and bleak are
asyncio libraries and the SDK runs them on the trio-asyncio loop. A driver written for trio sets
``flavor = "trio"``. Every call is bounded by the device's timeout; a call that overruns counts as the
device being unreachable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from .device import DeviceConfig, Point

__all__ = ["DeviceUnreachable", "Driver", "DriverSpec", "PointError", "WriteRefused"]


class DeviceUnreachable(Exception):
    """The link to the device is down (or never came up): the device is offline until a reconnect."""


class PointError(Exception):
    """One point failed (the device answered with an error, or a value did not decode); the link is fine."""


class WriteRefused(ValueError):
    """A desired value the SDK will not send: not parseable as the property's type, out of range, read-only."""


Emit = Callable[["Point", Any], None]


class Driver:
    """Base class with the optional parts filled in. Subclass and implement connect, read, write, close."""

    protocol: ClassVar[str] = ""
    flavor: ClassVar[Literal["asyncio", "trio"]] = "asyncio"

    def __init__(self, device: DeviceConfig) -> None:
        self.device = device
        self.config: dict[str, Any] = device.protocol_config
        #: set by the SDK: merge adjacent addresses into one request (the bench turns it off to compare).
        self.coalesce: bool = True

    def prepare(self, point: Point) -> Any:
        return None

    async def connect(self) -> None:
        raise NotImplementedError

    async def read(self, points: Sequence[Point]) -> Sequence[Any]:
        raise NotImplementedError

    async def write(self, writes: Sequence[tuple[Point, Any]]) -> Sequence[PointError | None]:
        raise NotImplementedError

    async def health(self) -> bool:
        return True

    async def close(self) -> None:
        return None

    #: set ``subscribe`` to a coroutine in push-capable drivers; ``None`` means polling only.
    subscribe: Callable[[Sequence[Point], Emit], Any] | None = None

    def wants_push(self, point: Point) -> bool:
        """Whether ``point`` is delivered by ``subscribe`` rather than polled (drivers with push override)."""
        return False

    @classmethod
    async def discover(cls, protocol_config: dict[str, Any]) -> list[dict[str, Any]]:
        return []


@dataclass
class DriverSpec:
    """What ``kubeedge_mapper_driver`` returns: the driver class and the protocol's JSON Schema.

    ``schema`` has two properties, ``protocol`` (the Device's ``spec.protocol.configData``) and ``visitor``
    (each property visitor's ``configData``). ``aliases`` are other protocol names the driver serves
    (v1alpha2's ``bluetooth`` for ``ble``).
    """

    protocol: str
    driver: type[Driver]
    schema: dict[str, Any]
    aliases: tuple[str, ...] = ()
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def serves(self, protocol: str) -> bool:
        return protocol == self.protocol or protocol in self.aliases

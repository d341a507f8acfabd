"""The mapper runtime: devices in, twins out, over MQTT only.

:class:`Mapper` connects to the node's broker, learns its devices (from files, and from the node's
membership: ``$hw/events/node/<node>/membership/get`` -> ``.../get/result`` and ``.../updated``, whose
entries carry the full Device and DeviceModel in this project), and runs one :class:`DeviceWorker` per
device it has a driver for. A worker connects its driver (reconnecting with backoff), collects each
point on its ``collectCycle``, reports ``twin/update`` on its ``reportCycle``, reports the device's
``state/update`` when it changes, pushes data where ``pushMethod.mqtt`` / ``dataTopic`` say so, and
turns ``twin/update/delta`` into checked writes followed by a fresh reported value.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from . import push, twin
from .convert import check_range, format_value, from_device, parse_value, to_device
from .device import DeviceConfig, DeviceError, Point, parse_device
from .driver import Driver, DriverSpec, WriteRefused
from .mqtt import MqttClient, parse_broker, split_errors
from .specs import validate_device

__all__ = ["DeviceWorker", "Mapper", "bridge_asyncio"]

log = logging.getLogger("kubeedge.mappers")

WEB_PUSH_BACKLOG = 256
WEB_PUSH_TIMEOUT = 5.0  # seconds, when pushMethod.http names no timeout


def bridge_asyncio() -> None:
    """Make asyncio libraries see trio-asyncio's loop, whatever was imported first.

    trio-asyncio replaces ``asyncio.get_running_loop`` when it is imported; anyio's asyncio backend binds
    that name when *it* is imported. If anyio came first (httpx, pytest's anyio plugin), asyncua's
    ``anyio.open_file`` (certificates) fails with "no running event loop" under trio-asyncio.
    """
    import asyncio
    import sys

    import trio_asyncio  # noqa: F401  (the import installs the patch)

    backend = sys.modules.get("anyio._backends._asyncio")
    if backend is not None and getattr(backend, "get_running_loop", None) is not asyncio.get_running_loop:
        backend.get_running_loop = asyncio.get_running_loop  # type: ignore[attr-defined]


BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
DEFAULT_TIMEOUT = 5.0
STATES = ("online", "offline", "unhealthy", "unknown")


def _reason(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc)
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class DeviceWorker:
    """One device: its driver's life cycle, collect and report cycles, desired values and state."""

    def __init__(self, mapper: Mapper, device: DeviceConfig, spec: DriverSpec) -> None:
        self.mapper = mapper
        self.device = device
        self.spec = spec
        self.state = "unknown"
        self.values: dict[str, tuple[str, str]] = {}
        self.errors: dict[str, str] = {}
        self.reads = 0
        self.requests_failed = 0
        self.scope = trio.CancelScope()
        self.driver: Driver | None = None
        self._lock = trio.Lock()
        self._pending: dict[str, tuple[Point, Any, str]] = {}
        self._pending_changed = trio.Event()
        self._changed = trio.Event()
        self._healthy = True
        timeout_ms = device.protocol_config.get("timeout")
        self.timeout: float = mapper.timeout
        if isinstance(timeout_ms, (int, float)) and not isinstance(timeout_ms, bool) and timeout_ms > 0:
            self.timeout = float(timeout_ms) / 1000
        self.points = self._prepare_points()
        for point in self.points:
            if point.desired is not None and point.property.writable:
                self.desire({point.name: point.desired}, quiet=True)

    @property
    def id(self) -> str:
        return self.device.id

    def _prepare_points(self) -> list[Point]:
        probe = self.spec.driver(self.device)
        points = []
        for point in self.device.points:
            try:
                point.prepared = probe.prepare(point)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("mapper %s: device %s property %s left out: %s", self.spec.protocol, self.id, point.name, exc)
                self.errors[point.name] = str(exc)
                continue
            points.append(point)
        return points

    # -- observing (tests and the host) ----------------------------------------------------------------

    async def wait_for(self, condition: Callable[[DeviceWorker], bool]) -> None:
        """Wait until ``condition(self)`` holds (checked after each state or value change)."""
        while not condition(self):
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- the driver ------------------------------------------------------------------------------------

    async def _call(self, driver: Driver, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        if driver.flavor == "trio":
            return await fn(*args)
        from trio_asyncio import aio_as_trio

        return await aio_as_trio(fn)(*args)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.scope:
            task_status.started()
            backoff = BACKOFF_START
            while True:
                driver = self.spec.driver(self.device)
                driver.coalesce = self.mapper.coalesce
                connected = False
                try:
                    with trio.fail_after(self.timeout):
                        await self._call(driver, driver.connect)
                    connected = True
                    backoff = BACKOFF_START
                    self.driver = driver
                    log.info("mapper %s: device %s connected", self.spec.protocol, self.id)
                    await self._session(driver)
                except BaseException as group:
                    exc, rest = split_errors(group, (Exception,))
                    if rest is not None:
                        raise rest from None  # cancelled: a driver error racing the cancellation is moot
                    assert exc is not None
                    self.requests_failed += 1
                    self._count("kubeedge_mapper_connection_failures_total", "Device connections refused or lost")
                    log.warning(
                        "mapper %s: device %s %s: %s; retrying in %.1f s",
                        self.spec.protocol,
                        self.id,
                        "lost" if connected else "unreachable",
                        _reason(exc),
                        backoff,
                    )
                    log.debug("mapper %s: device %s: details", self.spec.protocol, self.id, exc_info=exc)
                finally:
                    self.driver = None
                    with trio.CancelScope(shield=True), trio.move_on_after(2):
                        try:
                            await self._call(driver, driver.close)
                        except Exception as exc:
                            log.debug("mapper %s: closing %s: %s", self.spec.protocol, self.id, _reason(exc))
                await self._set_state("offline")
                await trio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    async def _session(self, driver: Driver) -> None:
        self._healthy = True
        await self._set_state("online")
        push = [p for p in self.points if driver.subscribe is not None and driver.wants_push(p)]
        polled = [p for p in self.points if p not in push]
        by_collect: dict[float, list[Point]] = {}
        for point in polled:
            by_collect.setdefault(point.collect_cycle, []).append(point)
        by_report: dict[float, list[Point]] = {}
        for point in self.points:
            if point in push or point.report_cycle > point.collect_cycle:
                by_report.setdefault(point.report_cycle, []).append(point)
        if push:
            await self._initial_read(driver, push)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_loop, driver)
            for cycle, points in by_collect.items():
                nursery.start_soon(self._collect_loop, driver, cycle, points)
            for cycle, points in by_report.items():
                nursery.start_soon(self._report_loop, cycle, points)
            if push and driver.subscribe is not None:
                nursery.start_soon(self._subscribe, driver, push)
            nursery.start_soon(self._health_loop, driver)

    async def _initial_read(self, driver: Driver, points: list[Point]) -> None:
        """Push points report on change only (BLE notifications): read them once so the twin starts full.
        A point that cannot be read (notify-only) just waits for its first push."""
        async with self._lock:
            with trio.fail_after(self.timeout):
                results = await self._call(driver, driver.read, points)
        fresh = [p for p, r in zip(points, results, strict=True) if not isinstance(r, Exception) and self._accept(p, r)]
        if fresh:
            self._notify()
            await self._report(fresh)

    async def _collect_loop(self, driver: Driver, cycle: float, points: list[Point]) -> None:
        deadline = trio.current_time()
        while True:
            await self._collect(driver, points, report=True)
            deadline += cycle
            now = trio.current_time()
            if deadline < now:
                deadline = now  # overran: skip the missed cycles rather than burst
            await trio.sleep_until(deadline)

    async def _collect(self, driver: Driver, points: Sequence[Point], *, report: bool) -> None:
        async with self._lock:
            with trio.fail_after(self.timeout):
                results = await self._call(driver, driver.read, points)
        if len(results) != len(points):
            raise RuntimeError(f"driver returned {len(results)} results for {len(points)} points")
        self.reads += len(points)
        self._count("kubeedge_mapper_points_read_total", "Device points read", len(points))
        now_due: list[Point] = []
        all_ok = True
        for point, result in zip(points, results, strict=True):
            if not self._accept(point, result):
                all_ok = False
                continue
            if not report or point.report_cycle <= point.collect_cycle:
                now_due.append(point)
        await self._set_state("online" if all_ok and self._healthy else "unhealthy")
        self._notify()
        if now_due:
            await self._report(now_due)

    def _accept(self, point: Point, result: Any) -> bool:
        kind = point.property.type
        if isinstance(result, Exception):
            self._point_error(point, str(result) or type(result).__name__)
            return False
        try:
            value = from_device(result, kind, scale=point.scale, offset=point.value_offset)
        except (ValueError, TypeError) as exc:
            self._point_error(point, f"cannot convert {result!r} to {kind}: {exc}")
            return False
        self.values[point.name] = (format_value(value, kind), kind)
        self.errors.pop(point.name, None)
        return True

    def _count(self, name: str, help: str, amount: float = 1.0) -> None:
        if self.mapper.metrics is not None:
            self.mapper.metrics.inc(name, amount, help=help, protocol=self.spec.protocol, device=self.id)

    def _point_error(self, point: Point, reason: str) -> None:
        self._count("kubeedge_mapper_point_errors_total", "Point reads that failed or could not be converted")
        if self.errors.get(point.name) != reason:
            log.warning("mapper %s: device %s property %s: %s", self.spec.protocol, self.id, point.name, reason)
        self.errors[point.name] = reason

    async def _report_loop(self, cycle: float, points: list[Point]) -> None:
        while True:
            await trio.sleep(cycle)
            await self._report(points)

    async def _report(self, points: Sequence[Point]) -> None:
        to_cloud = {p.name: self.values[p.name] for p in points if p.report_to_cloud and p.name in self.values}
        if to_cloud:
            await self.mapper.publish(twin.device_topic(self.id, "twin/update"), twin.twin_update(to_cloud))
        if self.device.data_topic:
            data = {p.name: self.values[p.name] for p in points if p.name in self.values}
            if data:
                await self.mapper.publish(self.device.data_topic, twin.data_update(data))
        for point in points:
            if point.name not in self.values:
                continue
            if point.push_mqtt:
                await self.mapper.push(point.push_mqtt, twin.data_update({point.name: self.values[point.name]}))
            if point.push_http or point.push_otel:
                self.mapper.push_web(self.device, point, *self.values[point.name])

    async def _subscribe(self, driver: Driver, points: list[Point]) -> None:
        send, receive = trio.open_memory_channel[tuple[Point, Any]](1024)

        def emit(point: Point, raw: Any) -> None:
            try:
                send.send_nowait((point, raw))
            except trio.WouldBlock:
                log.warning("mapper %s: device %s: push backlog full, dropping", self.spec.protocol, self.id)

        async def consume() -> None:
            async for point, raw in receive:
                if self._accept(point, raw):
                    self._notify()
                    if point.report_cycle <= point.collect_cycle:
                        await self._report([point])

        assert driver.subscribe is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await self._call(driver, driver.subscribe, points, emit)
            nursery.cancel_scope.cancel()

    async def _health_loop(self, driver: Driver) -> None:
        every = self.device.state_report_cycle or 5.0
        while True:
            await trio.sleep(every)
            with trio.fail_after(self.timeout):
                async with self._lock:
                    healthy = bool(await self._call(driver, driver.health))
            self._healthy = healthy
            if not healthy:
                await self._set_state("unhealthy")
            elif self.device.state_report_cycle:
                await self.mapper.publish(twin.device_topic(self.id, "state/update"), twin.state_update(self.state))

    async def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        log.info("mapper %s: device %s is %s", self.spec.protocol, self.id, state)
        self.state = state
        if self.mapper.metrics is not None:
            self.mapper.metrics.set(
                "kubeedge_mapper_device_online",
                1 if state == "online" else 0,
                help="1 while the mapper reaches the device and reads it cleanly",
                protocol=self.spec.protocol,
                device=self.id,
            )
        self._notify()
        await self.mapper.publish(twin.device_topic(self.id, "state/update"), twin.state_update(state))

    # -- desired values --------------------------------------------------------------------------------

    def desire(self, delta: dict[str, str], *, quiet: bool = False) -> list[tuple[str, str]]:
        """Check and queue desired values; return ``(property, reason)`` for each one refused."""
        refused: list[tuple[str, str]] = []
        for name, text in delta.items():
            point = self.device.point(name)
            if point is None or point not in self.points:
                if not quiet:
                    log.debug("mapper %s: device %s: no visitor for desired %s", self.spec.protocol, self.id, name)
                continue
            try:
                if not point.property.writable:
                    raise WriteRefused(f"property {name} is {point.property.access_mode}")
                value = parse_value(text, point.property.type)
                reason = check_range(value, point.property.minimum, point.property.maximum)
                if reason:
                    raise WriteRefused(reason)
                raw = to_device(value, scale=point.scale, offset=point.value_offset)
            except WriteRefused as exc:
                refused.append((name, f"property {name}: {exc}" if str(exc).find(name) < 0 else str(exc)))
                continue
            self._pending[name] = (point, raw, text)
        if self._pending:
            self._pending_changed.set()
        return refused

    async def _write_loop(self, driver: Driver) -> None:
        while True:
            await self._pending_changed.wait()
            self._pending_changed = trio.Event()
            if not self._pending:
                continue
            batch, self._pending = self._pending, {}
            writes = [(point, raw) for point, raw, _ in batch.values()]
            try:
                async with self._lock:
                    with trio.fail_after(self.timeout):
                        results = await self._call(driver, driver.write, writes)
            except BaseException:
                for name, item in batch.items():  # keep what is newer, retry the rest after reconnecting
                    self._pending.setdefault(name, item)
                raise
            written: list[Point] = []
            for (point, _raw), result in zip(writes, results, strict=True):
                if isinstance(result, Exception):
                    reason = f"property {point.name}: the device refused the write: {result}"
                    log.warning("mapper %s: device %s: %s", self.spec.protocol, self.id, reason)
                    await self.mapper.refuse(self.id, point.name, batch[point.name][2], reason, code=500)
                else:
                    written.append(point)
            if len(written) < len(writes):
                refused = len(writes) - len(written)
                self._count("kubeedge_mapper_write_errors_total", "Writes the device refused", refused)
            if written:
                self._count("kubeedge_mapper_writes_total", "Desired values written to the device", len(written))
                log.info(
                    "mapper %s: device %s: wrote %s", self.spec.protocol, self.id, ", ".join(p.name for p in written)
                )
                await self._collect(driver, written, report=False)


class Mapper:
    """Serve every device whose protocol one of ``drivers`` speaks, over the broker at ``broker``."""

    def __init__(
        self,
        drivers: Sequence[DriverSpec],
        *,
        broker: str | None,
        node: str | None = None,
        devices: Sequence[DeviceConfig] = (),
        membership: bool = True,
        coalesce: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        client_id: str | None = None,
        metrics: Any = None,
    ) -> None:
        """``metrics``: where to count reads, errors and writes (``ctx.metrics`` when hosted by a node)."""
        self.drivers = list(drivers)
        self.metrics = metrics
        self.broker = broker
        self.node = node
        self.static_devices = list(devices)
        self.membership = membership and bool(node) and broker is not None
        self.coalesce = coalesce
        self.timeout = timeout
        names = "-".join(sorted(d.protocol for d in self.drivers)) or "mapper"
        # Without a broker the mapper still polls and writes (tests, and a driver author's first run).
        self.client = (
            MqttClient(
                broker,
                client_id or f"kubeedge-mapper-{names}-{node or 'standalone'}-{os.getpid()}",
                on_connect=self._on_connect,
            )
            if broker is not None
            else None
        )
        self.workers: dict[str, DeviceWorker] = {}
        self._from_membership: set[str] = set()
        self._push_clients: dict[str, MqttClient] = {}
        # http/otel pushes go out from one task, so a slow endpoint never holds up twin reports
        self._web_out, self._web_in = trio.open_memory_channel[tuple[str, bytes, str, float]](WEB_PUSH_BACKLOG)
        self._web_failing: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self._changed = trio.Event()

    @property
    def label(self) -> str:
        return ",".join(d.protocol for d in self.drivers)

    def spec_for(self, protocol: str) -> DriverSpec | None:
        for spec in self.drivers:
            if spec.serves(protocol):
                return spec
        return None

    async def wait_device(self, device_id: str) -> DeviceWorker:
        while device_id not in self.workers:
            await self._changed.wait()
        return self.workers[device_id]

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[Mapper] = trio.TASK_STATUS_IGNORED) -> None:
        if any(spec.driver.flavor == "asyncio" for spec in self.drivers):
            bridge_asyncio()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._web_sender)
            if self.client is not None:
                await self.client.subscribe(twin.DELTA_FILTER)
                if self.membership:
                    assert self.node
                    await self.client.subscribe(twin.node_topic(self.node, "membership/get/result"))
                    await self.client.subscribe(twin.node_topic(self.node, "membership/updated"))
                await nursery.start(self.client.run, False)
                nursery.start_soon(self._dispatch)
            for device in self.static_devices:
                self.add_device(device)
            log.info(
                "mapper %s: serving node %s via %s (%d device(s) from files%s)",
                self.label,
                self.node or "-",
                self.client.address if self.client is not None else "no broker",
                len(self.static_devices),
                ", membership" if self.membership else "",
            )
            task_status.started(self)

    async def _on_connect(self) -> None:
        assert self.client is not None
        if self.membership:
            assert self.node
            await self.client.publish(twin.node_topic(self.node, "membership/get"), twin.membership_get())
        for worker in list(self.workers.values()):
            if worker.state != "unknown":
                await self.client.publish(twin.device_topic(worker.id, "state/update"), twin.state_update(worker.state))

    async def publish(self, topic: str, payload: bytes) -> None:
        if self.client is not None:
            await self.client.publish(topic, payload)

    async def push(self, method: dict[str, Any], payload: bytes) -> None:
        """Publish to a property's ``pushMethod.mqtt`` (its own broker when ``address`` names another)."""
        topic = method.get("topic")
        if not topic or self.client is None:
            return
        client = self.client
        address = method.get("address")
        if address:
            target = parse_broker(address)
            if (target.host, target.port) != (self.client.address.host, self.client.address.port):
                client = self._push_client(address)
        await client.publish(
            topic, payload, qos=min(int(method.get("qos") or 0), 1), retain=bool(method.get("retained"))
        )

    def push_web(self, device: DeviceConfig, point: Point, value: str, kind: str) -> None:
        """Queue a property's ``pushMethod.http`` / ``otel`` sends (see push.py); dropped, said once, when the
        endpoints fall behind by more than ``WEB_PUSH_BACKLOG`` sends."""
        stamp = twin.now_ms()
        sends: list[tuple[str, bytes, str, float]] = []
        if point.push_http:
            try:
                url = push.http_url(point.push_http)
            except ValueError as exc:
                self._web_failed(f"{device.id}/{point.name}", f"device {device.id} property {point.name}: {exc}")
            else:
                timeout = float(point.push_http.get("timeout") or 0) / 1000 or WEB_PUSH_TIMEOUT
                body = push.http_body(point.name, value, stamp)
                sends.append((url, body, "application/x-www-form-urlencoded", timeout))
        if point.push_otel and point.push_otel.get("endpointURL"):
            export = push.otlp_gauge(device.name, device.namespace, point.name, value, kind, stamp)
            if export is not None:
                url = str(point.push_otel["endpointURL"])
                sends.append((url, json.dumps(export).encode(), "application/json", WEB_PUSH_TIMEOUT))
        for send in sends:
            try:
                self._web_out.send_nowait(send)
            except trio.WouldBlock:
                self._web_failed(send[0], f"push to {send[0]} is {WEB_PUSH_BACKLOG} sends behind; dropping")

    def _web_failed(self, key: str, message: str) -> None:
        if key not in self._web_failing:
            self._web_failing.add(key)
            log.warning("mapper %s: %s", self.label, message)

    async def _web_sender(self) -> None:
        import httpx

        async with httpx.AsyncClient() as client:
            async for url, body, content_type, timeout in self._web_in:
                try:
                    headers = {"content-type": content_type}
                    reply = await client.post(url, content=body, headers=headers, timeout=timeout)
                    problem = f"HTTP {reply.status_code}" if reply.status_code >= 300 else ""
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                if problem:
                    self._web_failed(url, f"push to {url} failed: {problem} (said once until it works again)")
                elif url in self._web_failing:
                    self._web_failing.discard(url)
                    log.info("mapper %s: push to %s works again", self.label, url)

    def _push_client(self, address: str) -> MqttClient:
        client = self._push_clients.get(address)
        if client is None:
            assert self.client is not None
            client = MqttClient(address, f"{self.client.client_id}-push{len(self._push_clients)}")
            self._push_clients[address] = client
            assert self._nursery is not None
            self._nursery.start_soon(lambda: client.run(wait_first=False))
        return client

    async def refuse(self, device_id: str, prop: str, value: str, reason: str, *, code: int = 400) -> None:
        await self.publish(
            twin.device_topic(device_id, "twin/update/result"),
            twin.twin_result(code, reason, {prop: {"expected": {"value": value}}}),
        )

    # -- devices ---------------------------------------------------------------------------------------

    def add_device(self, device: DeviceConfig) -> DeviceWorker | None:
        spec = self.spec_for(device.protocol)
        if spec is None:
            log.debug("mapper %s: device %s speaks %s: not ours", self.label, device.id, device.protocol)
            return None
        old = self.workers.get(device.id)
        if old is not None:
            if old.device.raw == device.raw and device.raw:
                return old
            old.scope.cancel()
        try:
            validate_device(spec.schema, device)
        except DeviceError as exc:
            log.error("mapper %s: %s", spec.protocol, exc)
            assert self._nursery is not None
            self._nursery.start_soon(self._report_bad_device, device.id, str(exc))
            self.workers.pop(device.id, None)
            return None
        worker = DeviceWorker(self, device, spec)
        self.workers[device.id] = worker
        for point in device.points:
            if point.push_unsupported:
                log.warning(
                    "mapper %s: device %s property %s: pushMethod %s is not sent by this mapper (it sends %s)",
                    spec.protocol,
                    device.id,
                    point.name,
                    ", ".join(point.push_unsupported),
                    ", ".join(push.SUPPORTED),
                )
        assert self._nursery is not None
        self._nursery.start_soon(worker.run)
        self._notify()
        return worker

    async def _report_bad_device(self, device_id: str, reason: str) -> None:
        await self.publish(twin.device_topic(device_id, "state/update"), twin.state_update("unhealthy"))
        await self.publish(twin.device_topic(device_id, "twin/update/result"), twin.twin_result(400, reason))

    def remove_device(self, device_id: str) -> None:
        worker = self.workers.pop(device_id, None)
        if worker is not None:
            log.info("mapper %s: device %s removed", self.label, device_id)
            worker.scope.cancel()
            self._notify()
        self._from_membership.discard(device_id)

    def _membership_device(self, entry: dict[str, Any]) -> DeviceConfig | None:
        device, model = entry.get("device"), entry.get("model")
        if not isinstance(device, dict):
            log.debug("mapper %s: membership entry %s carries no Device object", self.label, entry.get("id"))
            return None
        try:
            config = parse_device(device, model if isinstance(model, dict) else None)
        except DeviceError as exc:
            log.error("mapper %s: membership: %s", self.label, exc)
            return None
        for name, prop in (entry.get("twin") or {}).items():
            expected = ((prop or {}).get("expected") or {}).get("value")
            point = config.point(name)
            if point is not None and expected is not None:
                point.desired = str(expected)
        return config

    async def _dispatch(self) -> None:
        assert self.client is not None
        async for topic, payload in self.client.messages:
            try:
                self._handle(topic, payload)
            except ValueError as exc:
                log.warning("mapper %s: bad message on %s: %s", self.label, topic, exc)

    def apply_membership(self, added: list[dict[str, Any]], removed: list[dict[str, Any]], full: bool) -> None:
        """Serve the devices of a membership list or update (entries carrying ``device`` and ``model``)."""
        listed: set[str] = set()
        for entry in added:
            config = self._membership_device(entry)
            if config is not None:
                listed.add(config.id)
                if self.add_device(config) is not None:
                    self._from_membership.add(config.id)
            elif isinstance(entry.get("id"), str):
                listed.add(entry["id"])  # listed without its Device object: keep serving what we have
        for entry in removed:
            device_id = entry.get("id") or "/".join(
                _name(entry.get("device") or {}) or ("default", str(entry.get("name")))
            )
            if device_id in self._from_membership:
                self.remove_device(device_id)
        if full:
            for device_id in list(self._from_membership - listed):
                self.remove_device(device_id)

    def _handle(self, topic: str, payload: bytes) -> None:
        if self.node and topic.startswith(twin.node_topic(self.node, "membership/")):
            self.apply_membership(*twin.parse_membership(payload))
            return
        located = twin.device_of(topic)
        if located is None:
            return
        device_id, suffix = located
        if suffix != "twin/update/delta":
            return
        worker = self.workers.get(device_id)
        if worker is None:
            return
        refused = worker.desire(twin.parse_delta(payload))
        assert self._nursery is not None
        for prop, reason in refused:
            log.warning("mapper %s: device %s: write refused: %s", self.label, device_id, reason)
            value = twin.parse_delta(payload).get(prop, "")
            self._nursery.start_soon(self.refuse, device_id, prop, value, reason)


def _name(obj: dict[str, Any]) -> tuple[str, str] | None:
    meta = obj.get("metadata") or {}
    if not meta.get("name"):
        return None
    return meta.get("namespace") or "default", meta["name"]

"""The embedded MQTT broker (mqttMode 0 and 1): amqtt on its own asyncio loop in a worker thread.

Why a thread: amqtt under trio-asyncio manages ~2.5k msgs/s, on its own loop ~8k (lab-protocols.md item 2).

Three changes to amqtt's broker, made by subclassing (amqtt is pinned to 0.12.x for this):

* KubeEdge's topics start with ``$hw``; amqtt 0.12 drops the connection of a client that publishes on any
  ``$`` topic. MQTT reserves ``$`` topics for the server's use, and mosquitto and edgecore's broker accept
  them from clients, as KubeEdge mappers expect; so does this broker.
* The eventbus listens inside the broker (a "tap"), not as a client: every message a client publishes on a
  topic the eventbus follows is handed to the trio side, with bounded in-flight slots (backpressure).
* Memory is bounded under a flood. amqtt reads every connection as fast as TCP delivers and queues without
  limit. Here a connection's reader pauses while that connection has more than ``session_backlog`` received
  messages not yet routed, and routing pauses while the broker holds more than ``max_backlog`` messages
  (queued for broadcast plus per-subscriber sends in flight). Paused readers leave data in the kernel's
  socket buffers, so a flooding publisher is slowed by TCP flow control instead of growing our heap. A
  QoS 0 message that waited ``flood_wait`` seconds for room is dropped (QoS 0 allows it; it is counted);
  QoS 1 and 2 messages always wait.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from .topics import matches_any

log = logging.getLogger("kubeedge.eventbus.broker")

__all__ = ["BrokerSettings", "EmbeddedBroker"]


@dataclass
class BrokerSettings:
    host: str = "127.0.0.1"
    port: int = 1884
    password_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    max_backlog: int = 2000
    session_backlog: int = 256
    flood_wait: float = 5.0
    tap_slots: int = 512
    publish_slots: int = 1024
    tap_filters: list[str] = field(default_factory=list)

    def check(self) -> None:
        if self.password_file is None and not _is_loopback(self.host):
            raise ValueError(
                f"the internal MQTT broker binds {self.host}, which is not loopback: anonymous access is only"
                " allowed on loopback; set passwordFile (lines 'user:<argon2 or bcrypt hash>')"
            )
        if self.password_file is not None and not Path(self.password_file).is_file():
            raise ValueError(f"passwordFile {self.password_file!r} does not exist")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls needs both certFile and keyFile")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class EmbeddedBroker:
    """Run with ``await nursery.start(broker.run)``; ``port`` is the bound port once started.

    Messages cross between the trio thread and the broker's thread through two deques. Each side wakes the
    other only when it is not already due to look (one flag per direction), so a burst costs one wake-up,
    not one per message. Both directions are bounded: ``publish_slots`` messages from trio, ``tap_slots``
    tapped messages towards trio; beyond that the producer waits.
    """

    def __init__(self, settings: BrokerSettings, *, tap: bool = True) -> None:
        settings.check()
        self.settings = settings
        self.port: int | None = None
        self.dropped = 0
        self.received = 0
        self._tap_enabled = tap
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._stop: asyncio.Event | None = None
        self._filters: list[str] = list(settings.tap_filters)
        self._error: BaseException | None = None
        self._stopping = False
        self._trio_token: trio.lowlevel.TrioToken | None = None
        # trio -> broker
        self._outbox: deque[tuple[str, bytes, int, bool]] = deque()
        self._outbox_due = False
        self._outbox_ready: asyncio.Event | None = None
        self._publish_room = trio.Semaphore(settings.publish_slots)
        # broker -> trio
        self._tapped: deque[tuple[str, bytes]] = deque()
        self._tap_due = False
        self._tap_ready = trio.Event()
        self._tap_room: asyncio.Semaphore | None = None

    # -- trio side ------------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        ready = trio.Event()
        token = trio.lowlevel.current_trio_token()
        self._trio_token = token

        def announce() -> None:
            trio.from_thread.run_sync(ready.set, trio_token=token)

        async with trio.open_nursery() as nursery:

            async def in_thread() -> None:
                # Not cancellable: the thread ends when its loop has shut the broker down (see finally below).
                await trio.to_thread.run_sync(self._thread_main, announce, abandon_on_cancel=False)
                if not ready.is_set():
                    ready.set()
                elif not self._stopping:
                    # The broker ended by itself: fail the module so the kernel restarts it.
                    raise RuntimeError(f"the internal MQTT broker stopped unexpectedly: {self._error!r}")

            nursery.start_soon(in_thread)
            try:
                await ready.wait()
                if self._error is not None or self.port is None:
                    raise RuntimeError(f"the internal MQTT broker did not start: {self._error}") from self._error
                task_status.started(self.port)
                await trio.sleep_forever()
            finally:
                self._request_stop()

    def _request_stop(self) -> None:
        self._stopping = True
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def set_filters(self, filters: list[str]) -> None:
        """Replace the topics the tap follows (called from trio; a list swap is atomic)."""
        self._filters = list(filters)

    async def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """Publish from trio to the broker's subscribers, in order.

        Returns once the message is queued for the broker's thread; at most ``publish_slots`` messages wait
        there (the broker takes them only while it has room), beyond that the caller waits.
        """
        loop, ready = self._loop, self._outbox_ready
        if loop is None or ready is None or self._broker is None:
            raise RuntimeError("the internal MQTT broker is not running")
        await self._publish_room.acquire()
        self._outbox.append((topic, payload, qos, retain))
        if not self._outbox_due:
            self._outbox_due = True
            try:
                loop.call_soon_threadsafe(ready.set)
            except RuntimeError:
                raise RuntimeError("the internal MQTT broker stopped") from None

    async def tapped(self) -> list[tuple[str, bytes]]:
        """Wait for messages clients published on followed topics; return them all, oldest first."""
        while True:
            await self._tap_ready.wait()
            self._tap_ready = trio.Event()
            self._tap_due = False
            batch = []
            while self._tapped:
                batch.append(self._tapped.popleft())
            if batch:
                self._release_tap_room(len(batch))
                return batch

    def _release_tap_room(self, count: int) -> None:
        loop, room = self._loop, self._tap_room
        if loop is None or room is None or loop.is_closed():
            return

        def release() -> None:
            for _ in range(count):
                room.release()

        try:
            loop.call_soon_threadsafe(release)
        except RuntimeError:
            pass

    def _wake_trio(self, fn: Callable[[], None]) -> None:
        token = self._trio_token
        if token is not None:
            try:
                token.run_sync_soon(fn)
            except trio.RunFinishedError:
                pass

    # -- broker thread --------------------------------------------------------------------------------

    def _thread_main(self, announce: Callable[[], None]) -> None:
        threading.current_thread().name = "kubeedge-mqtt-broker"
        # amqtt logs every connection and state change at INFO; quiet it unless someone chose a level.
        for name in ("amqtt", "transitions"):
            library_log = logging.getLogger(name)
            if library_log.level == logging.NOTSET:
                library_log.setLevel(logging.WARNING)
        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(self._serve(announce))
        except BaseException as exc:  # reported to trio, which raises it in run()
            self._error = exc
            log.error("internal MQTT broker stopped: %s: %s", type(exc).__name__, exc)
        finally:
            self._loop = None

    async def _serve(self, announce: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_log_loop_error)
        self._stop = asyncio.Event()
        self._tap_room = asyncio.Semaphore(self.settings.tap_slots)
        self._outbox_ready = asyncio.Event()
        self._loop = loop
        if self._stopping:
            announce()
            return
        broker = _Broker(_amqtt_config(self.settings), owner=self)
        try:
            await broker.start()
        except BaseException as exc:
            self._error = exc
            announce()
            return
        self._broker = broker
        drain = asyncio.create_task(self._drain_outbox(broker, self._outbox_ready))
        server = broker._servers["default"].instance
        self.port = int(server.sockets[0].getsockname()[1])
        log.info("internal MQTT broker listening on %s:%d", self.settings.host, self.port)
        announce()
        try:
            await self._stop.wait()
        finally:
            self._broker = None
            drain.cancel()
            # Drop every client first: a client that stopped reading would otherwise hold amqtt's shutdown
            # in a drain forever, and clients must see the broker go (they reconnect to its successor).
            for writer in list(broker.writers):
                writer.transport.abort()
            try:
                await asyncio.wait_for(broker.shutdown(), timeout=5)
            except (TimeoutError, Exception) as exc:
                log.warning("internal MQTT broker shutdown: %r", exc)

    async def _drain_outbox(self, broker: Any, ready: asyncio.Event) -> None:
        # One consumer keeps the order in which trio published.
        while True:
            await ready.wait()
            ready.clear()
            self._outbox_due = False
            done = 0
            while self._outbox:
                topic, payload, qos, retain = self._outbox.popleft()
                try:
                    await broker.publish_internal(topic, payload, qos, retain)
                except Exception as exc:
                    log.warning("internal MQTT broker: publish on %s failed: %r", topic, exc)
                done += 1
            if done:
                self._wake_trio(partial(_release, self._publish_room, done))

    # Called on the broker thread by _Broker for every message a client publishes.
    async def _tap_message(self, topic: str, payload: bytes) -> None:
        if not self._tap_enabled or not matches_any(self._filters, topic):
            return
        assert self._tap_room is not None
        await self._tap_room.acquire()
        self._tapped.append((topic, payload))
        if not self._tap_due:
            self._tap_due = True
            self._wake_trio(self._set_tap_ready)

    def _set_tap_ready(self) -> None:
        self._tap_ready.set()


def _release(semaphore: trio.Semaphore, count: int) -> None:
    for _ in range(count):
        semaphore.release()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop when installed (it roughly halves amqtt's per-message cost), else the selector loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.SelectorEventLoop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _log_loop_error(loop: Any, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    log.warning("internal MQTT broker: %s%s", context.get("message", "error"), f" ({exc!r})" if exc else "")


def _amqtt_config(settings: BrokerSettings) -> dict[str, Any]:
    listener: dict[str, Any] = {"type": "tcp", "bind": f"{settings.host}:{settings.port}"}
    if settings.cert_file:
        listener.update(ssl=True, certfile=settings.cert_file, keyfile=settings.key_file)
        if settings.ca_file:
            listener["cafile"] = settings.ca_file
    plugins: dict[str, Any] = {
        "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": settings.password_file is None}
    }
    if settings.password_file:
        plugins["amqtt.plugins.authentication.FileAuthPlugin"] = {"password_file": settings.password_file}
    return {"listeners": {"default": listener}, "plugins": plugins}


def _make_broker_class() -> type:
    from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
    from amqtt.broker import Broker

    class _GatedReader(StreamReaderAdapter):
        """Stops reading a connection while its received-but-unrouted messages exceed the session bound."""

        def __init__(self, reader: asyncio.StreamReader, limit: int) -> None:
            super().__init__(reader)
            self.session: Any = None
            self.limit = limit

        async def read(self, n: int = -1) -> bytes:
            session = self.session
            if session is not None:
                # asyncio.Queue has no "below a size" event to wait on; a short poll only while saturated.
                while session.delivered_message_queue.qsize() >= self.limit:  # noqa: ASYNC110
                    await asyncio.sleep(0.002)
            return await super().read(n)

    class _Broker(Broker):
        def __init__(self, config: dict[str, Any], owner: EmbeddedBroker) -> None:
            super().__init__(config)
            self._owner = owner
            self.writers: set[asyncio.StreamWriter] = set()

        async def stream_connected(
            self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
        ) -> None:
            gated = _GatedReader(reader, self._owner.settings.session_backlog)
            self.writers.add(writer)
            try:
                await self._client_connected(listener_name, gated, StreamWriterAdapter(writer))
            finally:
                self.writers.discard(writer)

        async def _handle_client_session(
            self, reader: Any, writer: Any, client_session: Any, handler: Any, server: Any, listener_name: str
        ) -> None:
            if isinstance(reader, _GatedReader):
                reader.session = client_session
            await super()._handle_client_session(reader, writer, client_session, handler, server, listener_name)

        def backlog(self) -> int:
            return self._broadcast_queue.qsize() + len(self._tasks_queue)

        async def _wait_for_room(self, qos: int) -> bool:
            limit = self._owner.settings.max_backlog
            if self.backlog() < limit:
                return True
            deadline = asyncio.get_running_loop().time() + self._owner.settings.flood_wait
            while self.backlog() >= limit:
                self._prune_tasks()
                if qos == 0 and asyncio.get_running_loop().time() > deadline:
                    return False
                await asyncio.sleep(0.002)
            return True

        def _prune_tasks(self) -> None:
            tasks = self._tasks_queue
            while tasks and tasks[0].done():
                task = tasks.popleft()
                if not task.cancelled() and task.exception() is not None:
                    log.debug("internal MQTT broker: a delivery failed: %r", task.exception())

        async def _handle_message_delivery(
            self, client_session: Any, handler: Any, wait_deliver: asyncio.Future[Any]
        ) -> bool:
            message = wait_deliver.result()
            self._owner.received += 1
            if message is None or not message.topic:
                return bool(await super()._handle_message_delivery(client_session, handler, wait_deliver))
            if not await self._wait_for_room(message.qos or 0):
                self._owner.dropped += 1
                return True
            topic = message.topic
            if topic.startswith("$") and "+" not in topic and "#" not in topic:
                await self._broadcast_message(client_session, topic, message.data)
                packet = message.publish_packet
                if packet is not None and packet.retain_flag:
                    await self.retain_message(client_session, topic, message.data, message.qos)
                return True
            return bool(await super()._handle_message_delivery(client_session, handler, wait_deliver))

        async def _broadcast_message(
            self, session: Any, topic: str | None, data: bytes | bytearray | None, force_qos: int | None = None
        ) -> None:
            if session is not None and topic is not None:
                await self._owner._tap_message(topic, bytes(data or b""))
            await super()._broadcast_message(session, topic, data, force_qos)

        def has_subscriber(self, topic: str) -> bool:
            return any(subs and self._matches(topic, f) for f, subs in self._subscriptions.items())

        async def publish_internal(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
            if retain:
                await self.retain_message(None, topic, payload, qos)
            # Replies nobody listens to (update/document without a subscriber) cost nothing more.
            if not self.has_subscriber(topic):
                return
            await self._wait_for_room(1)
            # qos None: each subscriber gets its own subscription's QoS; a forced 0 stays 0.
            await self._broadcast_message(None, topic, payload, 0 if qos == 0 else None)

    return _Broker


def _Broker(config: dict[str, Any], owner: EmbeddedBroker) -> Any:
    global _BROKER_CLASS
    if _BROKER_CLASS is None:
        _BROKER_CLASS = _make_broker_class()
    return _BROKER_CLASS(config, owner)


_BROKER_CLASS: type | None = None

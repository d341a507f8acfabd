"""The eventbus as a client of an external broker (mqttMode 1 and 2), with paho-mqtt on its own thread.

paho's network loop runs in its thread (``loop_start``) and reconnects by itself (0.1 s doubling to 5 s).
Messages it receives are handed to trio with ``trio.from_thread.run``, which waits while the eventbus is
busy: backpressure reaches the broker through TCP, nothing queues here. What edge modules publish while the
broker is away waits in a buffer of ``max_buffer`` messages (oldest dropped first when full, counted and
logged) and is sent, in order, once the connection is back.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

log = logging.getLogger("kubeedge.eventbus.external")

__all__ = ["ExternalLink"]

Deliver = Callable[[str, bytes], Awaitable[None]]


class ExternalLink:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        deliver: Deliver,
        filters: list[str],
        qos: int = 0,
        max_buffer: int = 10000,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        client_id: str = "",
    ) -> None:
        self.host = host
        self.port = port
        self.qos = qos
        self.max_buffer = max_buffer
        self.username = username
        self.password = password
        self.tls = tls
        self.ca_file = ca_file
        self.client_id = client_id or f"kubeedge-eventbus-{uuid.uuid4().hex[:8]}"
        self.buffer: deque[tuple[str, bytes, int, bool]] = deque()
        self.dropped = 0
        self.connected = False
        self.connects = 0
        self._deliver = deliver
        self._filters = list(filters)
        self._client: Any = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._state_changed = trio.Event()
        self._link_changed = trio.Event()
        self._closing = False

    # -- trio side ------------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect (retrying in the background) and flush the buffer whenever the connection comes back.

        Started as soon as the client runs: an unreachable broker does not stop the edge; modules' messages
        wait in the buffer.
        """
        import paho.mqtt.client as mqtt

        self._token = trio.lowlevel.current_trio_token()
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True
        )
        client.reconnect_delay_set(min_delay=1, max_delay=5)
        client.max_queued_messages_set(self.max_buffer)
        if self.username:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set(ca_certs=self.ca_file)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        # connect_async + loop_start: the first connection is retried like every later one.
        client.connect_async(self.host, self.port, keepalive=30)
        client.loop_start()
        task_status.started()
        try:
            while True:
                await self._state_changed.wait()
                self._state_changed = trio.Event()
                if self.connected:
                    self._flush()
        finally:
            self._closing = True
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._close, client)

    @staticmethod
    def _close(client: Any) -> None:
        client.disconnect()
        client.loop_stop()

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """Publish now if connected, else keep it for later (never blocks)."""
        import paho.mqtt.client as mqtt

        if self.connected and not self.buffer:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
            if info.rc == mqtt.MQTT_ERR_SUCCESS or (qos > 0 and info.rc == mqtt.MQTT_ERR_NO_CONN):
                # QoS > 0 while the link drops: paho keeps it and resends after reconnecting.
                return
        self._keep(topic, payload, qos, retain)
        if self.connected:
            # Older messages still wait (paho's own queue was full): keep the order, send what fits now.
            self._flush()

    def _keep(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if len(self.buffer) >= self.max_buffer:
            self.buffer.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "external MQTT broker %s:%d away and the publish buffer (%d) is full: %d oldest messages dropped",
                    self.host,
                    self.port,
                    self.max_buffer,
                    self.dropped,
                )
        self.buffer.append((topic, payload, qos, retain))

    def _flush(self) -> None:
        import paho.mqtt.client as mqtt

        sent = 0
        while self.buffer and self.connected:
            topic, payload, qos, retain = self.buffer[0]
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS and not (qos > 0 and info.rc == mqtt.MQTT_ERR_NO_CONN):
                break
            self.buffer.popleft()
            sent += 1
        if sent:
            log.info("sent %d buffered messages to the external MQTT broker %s:%d", sent, self.host, self.port)

    def subscribe(self, topic_filter: str) -> None:
        if topic_filter not in self._filters:
            self._filters.append(topic_filter)
            if self.connected:
                self._client.subscribe(topic_filter, qos=self.qos)

    def unsubscribe(self, topic_filter: str) -> None:
        if topic_filter in self._filters:
            self._filters.remove(topic_filter)
            if self.connected:
                self._client.unsubscribe(topic_filter)

    def _notify(self) -> None:
        self._state_changed.set()
        self._link_changed.set()
        self._link_changed = trio.Event()

    async def wait_connected(self, connects: int = 1) -> None:
        """Return once the link is up and has connected at least ``connects`` times (subscriptions sent)."""
        while not (self.connected and self.connects >= connects):
            await self._link_changed.wait()

    async def wait_disconnected(self) -> None:
        while self.connected:
            await self._link_changed.wait()

    # -- paho's thread --------------------------------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.warning("external MQTT broker %s:%d refused the connection: %s", self.host, self.port, reason_code)
            return
        if self._filters:
            client.subscribe([(f, self.qos) for f in self._filters])
        self.connects += 1
        log.info("connected to the external MQTT broker %s:%d", self.host, self.port)
        self._set_connected(True)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if not self._closing:
            log.warning("lost the external MQTT broker %s:%d (%s); reconnecting", self.host, self.port, reason_code)
        self._set_connected(False)

    def _set_connected(self, value: bool) -> None:
        def apply() -> None:
            self.connected = value
            self._notify()

        try:
            trio.from_thread.run_sync(apply, trio_token=self._token)
        except (trio.RunFinishedError, trio.Cancelled):
            pass

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            trio.from_thread.run(self._deliver, message.topic, bytes(message.payload), trio_token=self._token)
        except (trio.RunFinishedError, trio.Cancelled, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception as exc:
            log.error("external MQTT message on %s not handled: %s: %s", message.topic, type(exc).__name__, exc)

"""A small MQTT 3.1.1 client on trio: the mapper's only link to the edge.

The codec (``encode_*``, :class:`PacketReader`) is pure and tested without I/O; :class:`MqttClient` is the
transport: it connects, re-connects with backoff, re-subscribes, keeps the session alive with PINGREQ and
hands every incoming PUBLISH to one receive channel. QoS 0 and 1 are supported (QoS 1 publishes are
acknowledged when received; outgoing QoS 1 is sent once per connection, as mappers do not need more).
"""

from __future__ import annotations

import logging
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import trio

__all__ = ["BrokerAddress", "MqttClient", "MqttError", "PacketReader", "parse_broker", "split_errors"]

log = logging.getLogger("kubeedge.mappers.mqtt")

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 4, 8, 9, 12, 13, 14
CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


class MqttError(Exception):
    """A broker that cannot be reached, refuses us, or speaks nonsense."""


# -- addresses ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker(url: str) -> BrokerAddress:
    """Parse ``mqtt://``, ``tcp://`` (KubeEdge's spelling), ``mqtts://``, ``ssl://`` or a bare ``host:port``."""
    text = url.strip()
    if "://" not in text:
        text = "tcp://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "tcp", "mqtts", "ssl", "tls"):
        raise MqttError(f"broker address {url!r}: scheme must be mqtt, tcp, mqtts or ssl")
    tls = scheme in ("mqtts", "ssl", "tls")
    if not parts.hostname:
        raise MqttError(f"broker address {url!r} names no host")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise MqttError(f"broker address {url!r}: bad port") from None
    return BrokerAddress(
        host=parts.hostname,
        port=port,
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


# -- codec ----------------------------------------------------------------------------------------------


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(raw)) + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _length(len(body)) + body


def encode_connect(
    client_id: str, *, keepalive: int, username: str | None = None, password: str | None = None
) -> bytes:
    flags = 0x02  # clean session: a mapper re-subscribes itself
    payload = _string(client_id)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    return _packet(CONNECT << 4, _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload)


def encode_publish(topic: str, payload: bytes, *, qos: int = 0, retain: bool = False, packet_id: int = 0) -> bytes:
    body = _string(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return _packet((PUBLISH << 4) | (qos << 1) | int(retain), body)


def encode_subscribe(packet_id: int, filters: list[tuple[str, int]]) -> bytes:
    body = struct.pack("!H", packet_id) + b"".join(_string(t) + bytes([q]) for t, q in filters)
    return _packet((SUBSCRIBE << 4) | 0x02, body)


def encode_puback(packet_id: int) -> bytes:
    return _packet(PUBACK << 4, struct.pack("!H", packet_id))


PINGREQ_PACKET = bytes([PINGREQ << 4, 0])
DISCONNECT_PACKET = bytes([DISCONNECT << 4, 0])


@dataclass
class Packet:
    kind: int
    flags: int
    body: bytes


class PacketReader:
    """Splits a byte stream into MQTT packets; feed bytes in, take whole packets out."""

    MAX_PACKET = 16 * 1024 * 1024

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes | bytearray) -> list[Packet]:
        self._buffer += data
        packets: list[Packet] = []
        while True:
            packet = self._next()
            if packet is None:
                return packets
            packets.append(packet)

    def _next(self) -> Packet | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        length, multiplier, index = 0, 1, 1
        while True:
            if index >= len(buf):
                return None
            byte = buf[index]
            length += (byte & 0x7F) * multiplier
            index += 1
            if not byte & 0x80:
                break
            multiplier *= 128
            if multiplier > 128**3:
                raise MqttError("malformed remaining length")
        if length > self.MAX_PACKET:
            raise MqttError(f"packet of {length} bytes is too large")
        if len(buf) < index + length:
            return None
        packet = Packet(buf[0] >> 4, buf[0] & 0x0F, bytes(buf[index : index + length]))
        del buf[: index + length]
        return packet


def decode_publish(packet: Packet) -> tuple[str, bytes, int, int]:
    """Return (topic, payload, qos, packet id) of a PUBLISH packet."""
    body = packet.body
    (topic_length,) = struct.unpack_from("!H", body)
    topic = body[2 : 2 + topic_length].decode("utf-8", "replace")
    position = 2 + topic_length
    qos = (packet.flags >> 1) & 0x03
    packet_id = 0
    if qos:
        (packet_id,) = struct.unpack_from("!H", body, position)
        position += 2
    return topic, body[position:], qos, packet_id


# -- transport ------------------------------------------------------------------------------------------

LINK_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, MqttError, trio.TooSlowError)


def split_errors(
    exc: BaseException, kinds: tuple[type[BaseException], ...]
) -> tuple[BaseException | None, BaseException | None]:
    """Split ``exc`` (maybe a group) into (the first error of ``kinds``, everything else or None)."""
    if isinstance(exc, BaseExceptionGroup):
        matched, rest = exc.split(kinds)
        first: BaseException | None = matched
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        return first, rest
    if isinstance(exc, kinds):
        return exc, None
    return None, exc


Message = tuple[str, bytes]


class MqttClient:
    """An MQTT client that stays connected: run it in a nursery with ``await nursery.start(client.run)``.

    ``run`` reports started once the first connection is up when ``wait_first`` is true (the default),
    otherwise at once; it then re-connects forever with backoff (0.2 s doubling to 10 s). Subscriptions
    made with :meth:`subscribe` are renewed on every connection; ``on_connect`` runs after each.
    Incoming messages arrive on :attr:`messages` as ``(topic, payload)``.
    """

    def __init__(
        self,
        broker: str | BrokerAddress,
        client_id: str,
        *,
        keepalive: int = 30,
        ssl_context: ssl.SSLContext | None = None,
        on_connect: Callable[[], Awaitable[None]] | None = None,
        buffer: int = 1024,
    ) -> None:
        self.address = broker if isinstance(broker, BrokerAddress) else parse_broker(broker)
        self.client_id = client_id
        self.keepalive = keepalive
        self.ssl_context = ssl_context
        self.on_connect = on_connect
        self._send_messages, self.messages = trio.open_memory_channel[Message](buffer)
        self._filters: dict[str, int] = {}
        self._stream: trio.abc.Stream | None = None
        self._write_lock = trio.Lock()
        self._connected = trio.Event()
        self._packet_id = 0
        self._subacks: dict[int, trio.Event] = {}
        self.connections = 0
        self.last_error = ""

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    def _next_id(self) -> int:
        self._packet_id = self._packet_id % 65535 + 1
        return self._packet_id

    async def _write(self, data: bytes) -> None:
        stream = self._stream
        if stream is None:
            raise MqttError("not connected")
        async with self._write_lock:
            await stream.send_all(data)

    async def publish(self, topic: str, payload: bytes | str, *, qos: int = 0, retain: bool = False) -> None:
        """Publish, waiting for a connection if there is none right now."""
        raw = payload.encode() if isinstance(payload, str) else payload
        while True:
            await self._connected.wait()
            try:
                await self._write(
                    encode_publish(topic, raw, qos=qos, retain=retain, packet_id=self._next_id() if qos else 0)
                )
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, MqttError):
                await trio.sleep(0.05)  # the run loop notices the broken link and re-connects

    async def subscribe(self, topic_filter: str, qos: int = 0) -> None:
        """Subscribe (now if connected, and again after every re-connect); waits for the SUBACK if connected."""
        self._filters[topic_filter] = qos
        if self.connected:
            await self._subscribe_now([(topic_filter, qos)])

    async def _subscribe_now(self, filters: list[tuple[str, int]]) -> None:
        packet_id = self._next_id()
        done = self._subacks[packet_id] = trio.Event()
        try:
            await self._write(encode_subscribe(packet_id, filters))
            with trio.fail_after(10):
                await done.wait()
        finally:
            self._subacks.pop(packet_id, None)

    async def run(
        self, wait_first: bool = True, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        backoff = 0.2
        started = False
        if not wait_first:
            task_status.started()
            started = True
        while True:
            before = self.connections
            try:
                await self._session(task_status if not started else None)
            except BaseException as exc:  # the session's nursery wraps errors in groups
                error, rest = split_errors(exc, LINK_ERRORS)
                if rest is not None:
                    raise rest from None  # cancellation (or a bug) wins over a link that died meanwhile
                assert error is not None
                self.last_error = f"{type(error).__name__}: {error}"
                log.warning("mqtt %s (%s): connection lost or refused: %s", self.address, self.client_id, error)
            finally:
                # Only a link that was up gets a fresh event: publishers already waiting hold the unset one,
                # and must be woken by the next successful connection, however many attempts fail first.
                if self._connected.is_set():
                    self._connected = trio.Event()
                if self._stream is not None:
                    with trio.CancelScope(shield=True), trio.move_on_after(1):
                        await self._stream.aclose()
                    self._stream = None
            if self.connections > before:
                started = True
                backoff = 0.2
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _session(self, task_status: trio.TaskStatus[None] | None) -> None:
        address = self.address
        stream: trio.abc.Stream
        with trio.fail_after(10):
            if address.tls:
                stream = await trio.open_ssl_over_tcp_stream(
                    address.host, address.port, ssl_context=self.ssl_context or ssl.create_default_context()
                )
            else:
                stream = await trio.open_tcp_stream(address.host, address.port)
        self._stream = stream
        reader = PacketReader()
        await self._write(
            encode_connect(
                self.client_id, keepalive=self.keepalive, username=address.username, password=address.password
            )
        )
        with trio.fail_after(10):
            packets: list[Packet] = []
            while not packets:
                data = await stream.receive_some(65536)
                if not data:
                    raise MqttError("broker closed the connection during CONNECT")
                packets = reader.feed(data)
        first = packets.pop(0)
        if first.kind != CONNACK or len(first.body) < 2:
            raise MqttError(f"expected CONNACK, got packet type {first.kind}")
        if first.body[1] != 0:
            code = first.body[1]
            raise MqttError(f"broker refused the connection: {CONNACK_REASONS.get(code, f'code {code}')}")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reader, stream, reader, packets, nursery.cancel_scope)
            nursery.start_soon(self._pinger)
            if self._filters:
                await self._subscribe_now(list(self._filters.items()))
            self.connections += 1
            self._connected.set()
            log.info("mqtt %s (%s): connected", address, self.client_id)
            if task_status is not None:
                task_status.started()
            if self.on_connect is not None:
                await self.on_connect()

    async def _pinger(self) -> None:
        while True:
            await trio.sleep(max(self.keepalive * 0.5, 0.5))
            await self._write(PINGREQ_PACKET)

    async def _reader(
        self, stream: trio.abc.Stream, reader: PacketReader, pending: list[Packet], scope: trio.CancelScope
    ) -> None:
        for packet in pending:
            await self._handle(packet)
        while True:
            with trio.fail_after(self.keepalive * 1.5 + 5):
                data = await stream.receive_some(65536)
            if not data:
                raise MqttError("broker closed the connection")
            for packet in reader.feed(data):
                await self._handle(packet)

    async def _handle(self, packet: Packet) -> None:
        if packet.kind == PUBLISH:
            topic, payload, qos, packet_id = decode_publish(packet)
            if qos == 1:
                await self._write(encode_puback(packet_id))
            await self._send_messages.send((topic, payload))
        elif packet.kind == SUBACK:
            (packet_id,) = struct.unpack_from("!H", packet.body)
            if any(code == 0x80 for code in packet.body[2:]):
                log.warning("mqtt %s: broker refused a subscription (packet %d)", self.address, packet_id)
            event = self._subacks.get(packet_id)
            if event is not None:
                event.set()
        # PUBACK, PINGRESP: nothing to do.

    async def disconnect(self) -> None:
        """Say goodbye to the broker (best effort); cancel ``run`` afterwards."""
        if self._stream is not None:
            try:
                await self._write(DISCONNECT_PACKET)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, MqttError):
                pass

"""Real peers for the edge-messaging tests: a paho-mqtt "mapper", a mosquitto broker, a stand-in cloud link.

* :class:`PahoMapper` is what a third party's KubeEdge mapper is: paho-mqtt with its network loop on its own
  thread; what it receives is handed to trio with ``trio.from_thread``.
* :class:`Mosquitto` runs /usr/sbin/mosquitto on a free loopback port (restartable on the same port).
* :class:`CloudStub` sits on the edge bus as ``websocket`` (edgehub's name) until a test uses the real hubs:
  it records what the edge sends upstream and sends link events and cloud messages down.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import trio

from kubeedge import BaseModule, Context, Kernel, Message, Plugins
from kubeedge.profile import build_profile

MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PahoMapper:
    """An MQTT client as KubeEdge mappers are written (paho, loop on its own thread)."""

    def __init__(
        self,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str = "",
        clean_session: bool | None = None,
    ) -> None:
        self.port = port
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session
        )
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self._token = trio.lowlevel.current_trio_token()
        self._send, self._receive = trio.open_memory_channel[tuple[str, bytes]](100000)
        self._held: list[tuple[str, bytes]] = []
        self._connected = threading.Event()
        self.connect_result: Any = None
        self.connects = 0
        self.connected = False
        self._acks: dict[int, trio.Event] = {}
        self._acked: set[int] = set()
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self._link_changed = trio.Event()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            trio.from_thread.run_sync(
                self._send.send_nowait, (message.topic, bytes(message.payload)), trio_token=self._token
            )
        except trio.RunFinishedError:
            pass

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.connect_result = reason_code
        self.connects += 1
        self.connected = True
        self._connected.set()
        self._changed()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.connected = False
        self._changed()

    def _changed(self) -> None:
        def wake() -> None:
            self._link_changed.set()
            self._link_changed = trio.Event()

        try:
            trio.from_thread.run_sync(wake, trio_token=self._token)
        except trio.RunFinishedError:
            pass

    async def wait_connects(self, count: int) -> None:
        """Return once paho has connected ``count`` times (its automatic reconnects included)."""
        while self.connects < count:
            await self._link_changed.wait()

    async def wait_disconnected(self) -> None:
        while self.connected:
            await self._link_changed.wait()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        def acked() -> None:
            # Looked up on the trio thread: subscribe() stores the event before trio can run this.
            self._acked.add(mid)
            event = self._acks.pop(mid, None)
            if event is not None:
                event.set()

        trio.from_thread.run_sync(acked, trio_token=self._token)

    async def connect(self) -> Any:
        def go() -> None:
            self.client.connect("127.0.0.1", self.port, keepalive=30)
            self.client.loop_start()

        await trio.to_thread.run_sync(go)
        await trio.to_thread.run_sync(self._connected.wait, 10)
        return self.connect_result

    async def subscribe(self, *topics: str, qos: int = 1) -> None:
        for topic in topics:
            event = trio.Event()
            result, mid = self.client.subscribe(topic, qos=qos)
            assert result == mqtt.MQTT_ERR_SUCCESS and mid is not None
            if mid in self._acked:
                continue
            self._acks[mid] = event
            with trio.fail_after(10):
                await event.wait()

    async def publish(self, topic: str, payload: str | bytes, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        if qos:
            await trio.to_thread.run_sync(info.wait_for_publish, 10)

    async def expect(self, topic: str, timeout: float = 10) -> bytes:  # noqa: ASYNC109
        """The next payload received on exactly ``topic`` (other topics are kept for later)."""
        for index, (seen, payload) in enumerate(self._held):
            if seen == topic:
                del self._held[index]
                return payload
        with trio.fail_after(timeout):
            while True:
                seen, payload = await self._receive.receive()
                if seen == topic:
                    return payload
                self._held.append((seen, payload))

    def received_on(self, topic: str) -> list[bytes]:
        """Payloads on ``topic`` received so far and not yet taken by :meth:`expect` (drains what arrived)."""
        while True:
            try:
                self._held.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                break
        return [payload for seen, payload in self._held if seen == topic]

    async def close(self) -> None:
        def stop() -> None:
            self.client.disconnect()
            self.client.loop_stop()

        await trio.to_thread.run_sync(stop)


@asynccontextmanager
async def mapper(port: int, *topics: str, **kwargs: Any) -> AsyncIterator[PahoMapper]:
    peer = PahoMapper(port, **kwargs)
    await peer.connect()
    try:
        if topics:
            await peer.subscribe(*topics)
        yield peer
    finally:
        await peer.close()


class Mosquitto:
    """A real mosquitto on loopback; ``restart`` keeps the port."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.config = directory / f"mosquitto-{self.port}.conf"
        # Persistence: sessions and their queued QoS 1 messages survive a restart, as in production.
        # Started as root, mosquitto would drop to its own user, which cannot write into pytest's tmp_path.
        store = directory / f"mosquitto-{self.port}-store"
        store.mkdir(exist_ok=True)
        user = "user root\n" if os.geteuid() == 0 else ""
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{user}"
            f"persistence true\npersistence_location {store}/\nlog_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        # Spawning is quick; mosquitto's readiness is awaited below, off the trio thread.
        self.process = subprocess.Popen(  # noqa: ASYNC220
            [MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        stream = self.process.stderr
        assert stream is not None

        def wait_running() -> None:
            lines: list[bytes] = []
            for line in stream:
                lines.append(line)
                if b" running" in line:
                    threading.Thread(target=lambda: [None for _ in stream], daemon=True).start()
                    return
            raise RuntimeError(f"mosquitto did not start: {b''.join(lines).decode(errors='replace')}")

        with trio.fail_after(10):
            await trio.to_thread.run_sync(wait_running)

    async def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            await trio.to_thread.run_sync(self.process.wait, 10)
            self.process = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()


class CloudStub(BaseModule):
    """Stands where edgehub (``websocket``) stands on the edge bus."""

    name = "websocket"
    group = "hub"

    def __init__(self) -> None:
        super().__init__({})
        self.ctx: Context | None = None
        self._send, self._receive = trio.open_memory_channel[Message](100000)
        self._held: list[Message] = []

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        self.ctx = ctx
        task_status.started()
        async for message in ctx.bus.channel(self.name):
            self._send.send_nowait(message)

    async def link(self, state: str) -> None:
        """Tell the edge modules the cloud link is ``cloud_connected`` or ``cloud_disconnected``."""
        assert self.ctx is not None
        for target in ("twin", "eventbus", "servicebus", "mappers"):
            if self.ctx.bus.has_module(target):
                await self.ctx.send(
                    target,
                    Message(
                        source="websocket", group="meta", operation="connect", resource="node/connection", content=state
                    ),
                )

    async def down(self, target: str, message: Message) -> None:
        """Deliver a cloud message to an edge module, as edgehub does."""
        assert self.ctx is not None
        await self.ctx.send(target, message)

    async def expect(self, match: Callable[[Message], bool], timeout: float = 10) -> Message:  # noqa: ASYNC109
        for index, message in enumerate(self._held):
            if match(message):
                return self._held.pop(index)
        with trio.fail_after(timeout):
            while True:
                message = await self._receive.receive()
                if match(message):
                    return message
                self._held.append(message)

    def taken(self, match: Callable[[Message], bool]) -> list[Message]:
        """Messages received so far that match (without waiting)."""
        while True:
            try:
                self._held.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                break
        return [m for m in self._held if match(m)]


class Node:
    """An edge node running in this process (a kernel with the given modules)."""

    def __init__(self, kernel: Kernel, modules: dict[str, Any]) -> None:
        self.kernel = kernel
        self.modules = modules

    @property
    def eventbus(self) -> Any:
        return self.modules["eventbus"]

    @property
    def twin(self) -> Any:
        return self.modules["twin"]

    @property
    def cloud(self) -> CloudStub:
        stub: CloudStub = self.modules["websocket"]
        return stub

    @property
    def ctx(self) -> Context:
        return self.kernel.ctx


@asynccontextmanager
async def edge_node(
    data_dir: Path,
    *,
    eventbus: dict[str, Any] | None = None,
    twin: bool = True,
    cloud: bool = True,
    extra: list[Any] | None = None,
    node_name: str = "edge-1",
) -> AsyncIterator[Node]:
    """Start an edge kernel with the eventbus (internal broker on a free port unless configured), the twin
    and a cloud stub; yield it and stop it."""
    import kubeedge.plugins.eventbus as eventbus_plugin
    import kubeedge.plugins.twin as twin_plugin
    from kubeedge.plugins.eventbus.module import EventBus
    from kubeedge.plugins.twin.module import DeviceTwin

    config = {"mqttMode": 0, "mqttServerInternal": "tcp://127.0.0.1:0", **(eventbus or {})}
    sections: dict[str, Any] = {"eventbus": config}
    if twin:
        sections["twin"] = {}
    profile = build_profile({"role": "edge", "node": {"name": node_name}, "modules": sections}, data_dir=data_dir)
    plugins = Plugins()
    plugins.register("module", "eventbus", eventbus_plugin)
    plugins.register("module", "twin", twin_plugin)
    modules: dict[str, Any] = {"eventbus": EventBus(config)}
    if twin:
        modules["twin"] = DeviceTwin({})
    if cloud:
        modules["websocket"] = CloudStub()
    for module in extra or []:
        modules[module.name] = module
    kernel = Kernel(profile, plugins, list(modules.values()))
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(kernel.run, handle_signals=False))
        try:
            yield Node(kernel, modules)
        finally:
            kernel.stop()

"""The eventbus module: MQTT in and out of the edge, as KubeEdge's EventBus.

In: messages on KubeEdge's topics (and on rule topics) from the internal broker's tap and/or the external
broker's client. ``$hw/events/device/...`` and ``$hw/events/node/...`` go to ``twin`` (operation
``publish``, resource = topic, content = payload text); everything else goes up to the cloud router through
``websocket`` as KubeEdge sends it: route ``bus``/``user``/``upload``, resource = topic, content = payload.

Out: any module sends ``eventbus`` a message with operation ``publish`` (resource = topic, content = text
or JSON); the cloud router's messages (source ``router_eventbus``) arrive the same way. Operations
``subscribe``/``unsubscribe`` (resource = topic filter) add or remove rule topics. Publishes go to the
internal broker (mode 0, 1) and the external one (mode 1, 2), as KubeEdge does.
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from pathlib import Path
from typing import Any

import trio

from kubeedge import BaseModule, Context, Message

from .broker import BrokerSettings, EmbeddedBroker
from .external import ExternalLink
from .topics import KUBEEDGE_TOPICS, is_twin_topic, parse_mode, parse_server, validate_filter, validate_topic

log = logging.getLogger("kubeedge.eventbus")

__all__ = ["EventBus"]

DEFAULTS: dict[str, Any] = {
    "mqttMode": 2,
    "mqttServerInternal": "tcp://127.0.0.1:1884",
    "mqttServerExternal": "tcp://127.0.0.1:1883",
    "mqttQOS": 0,
    "mqttRetain": False,
    "maxBuffer": 10000,
    "maxBacklog": 2000,
}


class EventBus(BaseModule):
    name = "eventbus"
    group = "bus"

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__({**DEFAULTS, **(config or {})})
        cfg = self.config
        self.mode = parse_mode(cfg["mqttMode"])
        self.qos = int(cfg["mqttQOS"])
        self.retain = bool(cfg["mqttRetain"])
        self.internal_port: int | None = None
        self.broker: EmbeddedBroker | None = None
        self.external: ExternalLink | None = None
        self.rule_topics: list[str] = list(cfg.get("ruleTopics") or [])
        self.received = 0
        self.published = 0
        self._ctx: Context | None = None
        self.filters_changed = trio.Event()
        self._inbound_send, self._inbound_receive = trio.open_memory_channel[tuple[str, bytes]](0)

    @property
    def filters(self) -> list[str]:
        return [*KUBEEDGE_TOPICS, *self.rule_topics]

    @property
    def uses_internal(self) -> bool:
        return self.mode <= 1

    @property
    def uses_external(self) -> bool:
        return self.mode >= 1

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        self._ctx = ctx
        # Messages from the external broker; paho's thread waits while this is full.
        self._inbound_send, self._inbound_receive = trio.open_memory_channel[tuple[str, bytes]](256)
        self.broker = None
        self.external = None
        self._load_rule_topics(ctx)
        cfg = self.config
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._dispatch_inbound, ctx)
            if self.uses_internal:
                host, port, tls_url = parse_server(cfg["mqttServerInternal"])
                tls = cfg.get("tls") or {}
                if tls_url and not tls.get("certFile"):
                    raise ValueError("mqttServerInternal is ssl:// but tls.certFile/keyFile are not set")
                settings = BrokerSettings(
                    host=host,
                    port=port,
                    password_file=cfg.get("passwordFile"),
                    cert_file=tls.get("certFile"),
                    key_file=tls.get("keyFile"),
                    ca_file=tls.get("caFile"),
                    max_backlog=int(cfg["maxBacklog"]),
                    tap_filters=self.filters,
                )
                self.broker = EmbeddedBroker(settings)
                self.internal_port = await nursery.start(self.broker.run)
                nursery.start_soon(self._dispatch_tapped, ctx, self.broker)
                nursery.start_soon(self._export_broker_counts, ctx, self.broker)
            if self.uses_external:
                host, port, tls_url = parse_server(cfg["mqttServerExternal"])
                self.external = ExternalLink(
                    host,
                    port,
                    deliver=self._deliver_external,
                    filters=self.filters,
                    qos=self.qos,
                    max_buffer=int(cfg["maxBuffer"]),
                    username=cfg.get("mqttUsername") or None,
                    password=cfg.get("mqttPassword") or None,
                    tls=tls_url,
                    ca_file=(cfg.get("tls") or {}).get("caFile"),
                    client_id=cfg.get("mqttSubClientID") or f"kubeedge-eventbus-{ctx.node_name}",
                )
                await nursery.start(self.external.run)
            log.info(
                "eventbus on node %s: mqttMode %d%s%s",
                ctx.node_name,
                self.mode,
                f", internal broker on {self.config['mqttServerInternal'].rsplit(':', 1)[0]}:{self.internal_port}"
                if self.uses_internal
                else "",
                f", external broker {cfg['mqttServerExternal']}" if self.uses_external else "",
            )
            task_status.started()
            async for message in ctx.bus.channel(self.name):
                await self._handle_bus(ctx, message)

    # -- MQTT in --------------------------------------------------------------------------------------

    async def _deliver_external(self, topic: str, payload: bytes) -> None:
        await self._inbound_send.send((topic, payload))

    async def _dispatch_inbound(self, ctx: Context) -> None:
        async with self._inbound_receive:
            async for topic, payload in self._inbound_receive:
                await self._route_guarded(ctx, topic, payload)

    async def _dispatch_tapped(self, ctx: Context, broker: EmbeddedBroker) -> None:
        while True:
            for topic, payload in await broker.tapped():
                await self._route_guarded(ctx, topic, payload)

    async def _export_broker_counts(self, ctx: Context, broker: EmbeddedBroker, interval: float = 1.0) -> None:
        """The broker counts on its own thread; its numbers join ctx.metrics from here, once a second."""
        received = dropped = 0
        while True:
            now_received, now_dropped = broker.received, broker.dropped
            if now_received > received:
                ctx.metrics.inc(
                    "kubeedge_broker_messages_received_total",
                    now_received - received,
                    help="MQTT messages the embedded broker received from clients",
                )
            if now_dropped > dropped:
                ctx.metrics.inc(
                    "kubeedge_broker_messages_dropped_total",
                    now_dropped - dropped,
                    help="QoS 0 messages the embedded broker dropped under a flood",
                )
            received, dropped = now_received, now_dropped
            await trio.sleep(interval)

    async def _route_guarded(self, ctx: Context, topic: str, payload: bytes) -> None:
        self.received += 1
        try:
            await self._route_inbound(ctx, topic, payload)
        except Exception as exc:
            log.error("eventbus on %s: message on %s not routed: %s", ctx.node_name, topic, exc)

    async def _route_inbound(self, ctx: Context, topic: str, payload: bytes) -> None:
        text = payload.decode("utf-8", errors="replace")
        if is_twin_topic(topic):
            target = "twin"
            message = Message(
                msg_id=fast_id(), source="eventbus", group="twin", operation="publish", resource=topic, content=text
            )
        else:
            target = "websocket"
            message = Message(
                msg_id=fast_id(), source="bus", group="user", operation="upload", resource=topic, content=text
            )
        if not ctx.bus.has_module(target):
            log.debug("eventbus on %s: no %s module for a message on %s; dropped", ctx.node_name, target, topic)
            return
        await ctx.send(target, message)
        ctx.metrics.inc("kubeedge_eventbus_routed_total", help="MQTT messages handed to a module", target=target)

    # -- bus in, MQTT out -----------------------------------------------------------------------------

    async def _handle_bus(self, ctx: Context, message: Message) -> None:
        operation = message.operation
        try:
            if operation == "publish":
                await self.publish(message.resource, message.content)
            elif operation == "subscribe":
                self.subscribe(message.resource, ctx)
            elif operation == "unsubscribe":
                self.unsubscribe(message.resource, ctx)
            else:
                log.debug(
                    "eventbus on %s ignores %s %s from %s", ctx.node_name, operation, message.resource, message.source
                )
                return
        except ValueError as exc:
            log.error(
                "eventbus on %s: %s %r from %s refused: %s",
                ctx.node_name,
                operation,
                message.resource,
                message.source,
                exc,
            )
            await self._answer_error(ctx, message, str(exc))
            return
        if message.sync:
            ctx.send_resp(message.reply("OK", source=self.name))

    async def _answer_error(self, ctx: Context, message: Message, text: str) -> None:
        if message.sync:
            ctx.send_resp(message.reply(text, operation="error", source=self.name))

    async def publish(self, topic: str, content: Any, *, qos: int | None = None, retain: bool | None = None) -> None:
        """Publish on the broker(s) of this mode; ``content`` text, bytes, or JSON-able."""
        validate_topic(topic)
        payload = _payload(content)
        qos = self.qos if qos is None else qos
        retain = self.retain if retain is None else retain
        if self.broker is not None:
            await self.broker.publish(topic, payload, qos, retain)
        if self.external is not None:
            self.external.publish(topic, payload, qos, retain)
        self.published += 1
        if self._ctx is not None:
            self._ctx.metrics.inc("kubeedge_eventbus_published_total", help="Messages modules published over MQTT")

    def subscribe(self, topic_filter: str, ctx: Context | None = None) -> None:
        validate_filter(topic_filter)
        if topic_filter in self.filters:
            return
        self.rule_topics.append(topic_filter)
        self._apply_filters(ctx)

    def unsubscribe(self, topic_filter: str, ctx: Context | None = None) -> None:
        if topic_filter not in self.rule_topics:
            return
        self.rule_topics.remove(topic_filter)
        if self.external is not None:
            self.external.unsubscribe(topic_filter)
        self._apply_filters(ctx)

    def _apply_filters(self, ctx: Context | None) -> None:
        self.filters_changed.set()
        self.filters_changed = trio.Event()
        if self.broker is not None:
            self.broker.set_filters(self.filters)
        if self.external is not None:
            for f in self.rule_topics:
                self.external.subscribe(f)
        if ctx is not None:
            self._save_rule_topics(ctx)

    def _rule_file(self, ctx: Context) -> Path:
        return ctx.data_dir / "eventbus-rule-topics.json"

    def _load_rule_topics(self, ctx: Context) -> None:
        path = self._rule_file(ctx)
        if not path.is_file():
            return
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("eventbus on %s: cannot read %s: %s", ctx.node_name, path, exc)
            return
        for topic_filter in saved if isinstance(saved, list) else []:
            if isinstance(topic_filter, str) and topic_filter not in self.filters:
                self.rule_topics.append(topic_filter)

    def _save_rule_topics(self, ctx: Context) -> None:
        path = self._rule_file(ctx)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.rule_topics))
        except OSError as exc:
            log.warning("eventbus on %s: cannot save rule topics to %s: %s", ctx.node_name, path, exc)


def fast_id() -> str:
    """A random UUID4 string without the system call ``uuid.uuid4`` makes (message ids need no secrecy)."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def _payload(content: Any) -> bytes:
    if content is None:
        return b""
    if isinstance(content, bytes | bytearray):
        return bytes(content)
    if isinstance(content, str):
        return content.encode()
    return json.dumps(content, separators=(",", ":")).encode()

"""The ``twin`` module (KubeEdge's DeviceTwin): membership, twin, communication and device parts.

From the mappers (MQTT, through the eventbus): ``twin/update`` -> ``update/result`` + ``update/document``
(+ ``update/delta`` while expected and actual differ), ``twin/get`` -> ``get/result``, ``state/update`` ->
``state/update/result``, ``membership/get`` -> ``membership/get/result``. From the cloud (through edgehub):
``membership`` (devices added or removed; ``membership/updated`` is published and the message is passed to
``mappers`` when loaded), ``membership/detail`` (the full list, answered to our ``get`` on connect),
``device/<ns>/<name>/twin/cloud_updated`` (desired values -> delta to the mapper) and
``device/<ns>/<name>/updated`` (attributes).

Reported values and states go to the cloud (``twin/edge_updated``, ``state/update``) when it is connected;
otherwise they stay marked unsynced in the store and are sent on ``cloud_connected``. A value carries its
metadata timestamp; an older value never replaces a newer one.

Messages are handled in batches: a batch's changes are written in one transaction, then its MQTT replies
and cloud messages are sent, so a reply never announces what is not stored.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import trio

from kubeedge import BaseModule, Context, Message

from . import protocol as p
from .protocol import (
    Device,
    ProtocolError,
    Twin,
    TwinChange,
    device_topic,
    encode,
    error_payload,
    fast_id,
    node_topic,
)
from .store import TwinStore

log = logging.getLogger("kubeedge.twin")

__all__ = ["DeviceTwin"]

DB_ATTEMPTS = 5


class DeviceTwin(BaseModule):
    name = "twin"
    group = "twin"

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.batch_size = int(self.config.get("batchSize", 256))
        self.devices: dict[str, Device] = {}
        self.cloud_connected = False
        self.store: TwinStore | None = None
        self.node_name = ""
        self.handled = 0
        self._dirty: set[str] = set()
        self._removed: set[str] = set()
        self._report: set[str] = set()
        self._out: list[tuple[str, Message]] = []
        self.committed = trio.Event()
        self.metrics: Any = None  # ctx.metrics once running

    def _count(self, name: str, help: str, **labels: str) -> None:
        if self.metrics is not None:
            self.metrics.inc(name, help=help, **labels)

    # -- running --------------------------------------------------------------------------------------

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        self.node_name = ctx.node_name
        self.metrics = ctx.metrics
        db = ctx.database()

        def open_store() -> tuple[TwinStore, dict[str, Device]]:
            store = TwinStore()
            store.create(db.peewee)
            return store, store.load()

        self.store, self.devices = await db.run(open_store)
        self._report = {d.id for d in self.devices.values() if _unsynced(d)}
        log.info("twin on node %s: %d devices loaded", ctx.node_name, len(self.devices))
        task_status.started()
        channel = ctx.bus.channel(self.name)
        while True:
            batch = [await channel.receive()]
            while len(batch) < self.batch_size:
                try:
                    batch.append(channel.receive_nowait())
                except trio.WouldBlock:
                    break
            for message in batch:
                try:
                    self.handle(ctx, message)
                except Exception as exc:
                    log.exception(
                        "twin on %s: %s %s from %s failed: %s",
                        ctx.node_name,
                        message.operation,
                        message.resource,
                        message.source,
                        exc,
                    )
            self.handled += len(batch)
            await self._commit(ctx)

    async def _commit(self, ctx: Context) -> None:
        reports = self._build_reports(ctx)
        if self._dirty or self._removed:
            devices = [self.devices[d] for d in self._dirty if d in self.devices]
            removed = list(self._removed)
            assert self.store is not None
            for attempt in range(1, DB_ATTEMPTS + 1):
                try:
                    await ctx.database().run(self.store.write, devices, removed)
                    break
                except Exception as exc:
                    log.error(
                        "twin on %s: writing %d devices failed (%d/%d): %s",
                        ctx.node_name,
                        len(devices),
                        attempt,
                        DB_ATTEMPTS,
                        exc,
                    )
                    if attempt == DB_ATTEMPTS:
                        raise
                    await trio.sleep(1)
            self._dirty.clear()
            self._removed.clear()
        out, self._out = self._out, []
        for target, message in out:
            if ctx.bus.has_module(target):
                await ctx.send(target, message)
            else:
                log.debug("twin on %s: no %s module for %s", ctx.node_name, target, message.resource)
        for message in reports:
            await ctx.send("websocket", message)
        if reports:
            ctx.metrics.inc("kubeedge_twin_reports_total", len(reports), help="Twin/state reports sent to the cloud")
        ctx.metrics.set("kubeedge_twin_devices", len(self.devices), help="Devices this node's twin holds")
        ctx.metrics.set(
            "kubeedge_twin_unsynced_devices", len(self._report), help="Devices with reports the cloud has not had yet"
        )
        self.committed.set()
        self.committed = trio.Event()

    # -- dispatch -------------------------------------------------------------------------------------

    def handle(self, ctx: Context, message: Message) -> None:
        resource = message.resource
        if message.operation == "connect" and resource == "node/connection":
            self._on_connection(ctx, message.content)
        elif resource.startswith("$hw/"):
            self._on_mqtt(resource, _text(message.content))
        elif message.operation in {"query", "get"} and message.sync and message.source != "websocket":
            self._answer_query(ctx, message)
        elif resource in {"membership", "membership/detail"}:
            self._on_membership(ctx, message, full=resource == "membership/detail" and message.operation != "update")
        elif resource.startswith("device/") and resource.endswith("/twin/cloud_updated"):
            self._on_cloud_twin(resource[len("device/") : -len("/twin/cloud_updated")], message.content)
        elif resource.startswith("device/") and resource.endswith("/updated"):
            self._on_cloud_attributes(resource[len("device/") : -len("/updated")], message.content)
        else:
            log.debug("twin ignores %s %s from %s", message.operation, resource, message.source)

    def _on_connection(self, ctx: Context, content: Any) -> None:
        if content == "cloud_connected":
            self.cloud_connected = True
            self._report.update(d.id for d in self.devices.values() if _unsynced(d))
            self._to_cloud(
                Message(
                    msg_id=fast_id(),
                    source="twin",
                    group="twin",
                    operation="get",
                    resource="membership/detail",
                    content={"event_id": _event_id(), "timestamp": p.now_ms()},
                )
            )
        elif content == "cloud_disconnected":
            self.cloud_connected = False

    # -- MQTT from mappers ----------------------------------------------------------------------------

    def _on_mqtt(self, topic: str, payload: str) -> None:
        parsed = p.parse_device_topic(topic)
        if parsed is not None:
            device_id, action = parsed
            if action == "twin/update":
                self._mapper_twin_update(device_id, payload)
            elif action == "twin/get":
                self._twin_get(device_id, payload)
            elif action == "state/update":
                self._state_update(device_id, payload)
            else:
                log.debug("twin ignores MQTT %s", topic)
            return
        node = p.parse_node_topic(topic)
        if node is not None and node[1] == "membership/get":
            self._membership_get(node[0], payload)
            return
        log.debug("twin ignores MQTT %s", topic)

    def _mapper_twin_update(self, device_id: str, payload: str) -> None:
        result_topic = device_topic(device_id, "twin/update/result")
        try:
            body = p.load_object(payload, p.BAD_UPDATE)
        except ProtocolError as exc:
            # edgecore answers an unreadable body on the topic of an empty device id.
            self._publish(device_topic("", "twin/update/result"), error_payload("", exc.code, exc.reason))
            return
        event_id = _str(body.get("event_id"))
        device = self.devices.get(device_id)
        if device is None:
            self._publish(
                result_topic, error_payload(event_id, 404, "update rejected due to the device is not existed")
            )
            return
        try:
            changes = p.parse_twin_update(body, p.request_timestamp(body))
        except ProtocolError as exc:
            self._publish(result_topic, error_payload(event_id, exc.code, exc.reason))
            return
        now = p.now_ms()
        result, document = self._apply(device, changes, from_cloud=False)
        self._count("kubeedge_twin_updates_total", "Twin updates applied, by where they came from", source="mapper")
        self._publish(result_topic, encode({"event_id": event_id, "timestamp": now, "twin": result}))
        self._publish(
            device_topic(device_id, "twin/update/document"),
            encode({"event_id": event_id, "timestamp": now, "twin": document}),
        )
        self._publish_delta(device)

    def _twin_get(self, device_id: str, payload: str) -> None:
        topic = device_topic(device_id, "twin/get/result")
        try:
            body = p.load_object(payload, p.BAD_GET, empty_ok=True)
        except ProtocolError as exc:
            self._publish(topic, error_payload("", exc.code, exc.reason))
            return
        event_id = _str(body.get("event_id"))
        device = self.devices.get(device_id)
        if device is None:
            self._publish(topic, error_payload(event_id, 404, f"Device {device_id} not found while getting twin"))
            return
        twins = {k: t.to_msg() for k, t in device.twins.items()}
        self._publish(topic, encode({"event_id": event_id, "timestamp": p.now_ms(), "twin": twins}))

    def _state_update(self, device_id: str, payload: str) -> None:
        device = self.devices.get(device_id)
        if device is None:
            log.debug("twin on %s: state update for unknown device %s ignored", self.node_name, device_id)
            return
        topic = device_topic(device_id, "state/update/result")
        try:
            body = p.load_object(payload, p.BAD_STATE)
        except ProtocolError as exc:
            self._publish(topic, error_payload("", exc.code, exc.reason))
            return
        event_id = _str(body.get("event_id"))
        state = body.get("state")
        if not isinstance(state, str) or state not in p.ALLOWED_STATES:
            reason = f"state {state!r} is not allowed, must be one of {', '.join(p.ALLOWED_STATES)}"
            self._publish(topic, error_payload(event_id, 400, reason))
            return
        device.state = state
        self._count("kubeedge_twin_state_updates_total", "Device state reports from mappers", state=state)
        if state == "online":
            device.last_online = time.strftime("%Y-%m-%d %H:%M:%S")
        device.state_synced = False
        self._mark(device.id, report=True)
        info: dict[str, Any] = {"name": device.name, "state": device.state}
        if device.last_online:
            info["last_online"] = device.last_online
        self._publish(topic, encode({"event_id": event_id, "timestamp": p.now_ms(), "device": info}))

    def _membership_get(self, node: str, payload: str) -> None:
        topic = node_topic(node, "membership/get/result")
        try:
            body = p.load_object(payload, p.BAD_MEMBERSHIP_GET, empty_ok=True)
        except ProtocolError as exc:
            self._publish(topic, error_payload("", exc.code, exc.reason))
            return
        devices = [d.to_msg(with_twin=False) for d in self.devices.values()]
        self._publish(
            topic, encode({"event_id": _str(body.get("event_id")), "timestamp": p.now_ms(), "devices": devices})
        )

    # -- from the cloud -------------------------------------------------------------------------------

    def _on_membership(self, ctx: Context, message: Message, *, full: bool) -> None:
        content = _json(message.content)
        if not isinstance(content, dict):
            log.warning("twin on %s: membership message without an object: %r", self.node_name, message.content)
            return
        added_entries = content.get("added_devices") or []
        removed_entries = content.get("removed_devices") or []
        if full and isinstance(content.get("devices"), list):
            added_entries = content["devices"]
            listed = {e.get("id") for e in added_entries if isinstance(e, dict)}
            removed_entries = [{"id": d} for d in self.devices if d not in listed]
        added: list[Device] = []
        for entry in added_entries if isinstance(added_entries, list) else []:
            try:
                fresh = p.parse_device_entry(entry)
            except ValueError as exc:
                log.warning("twin on %s: %s", self.node_name, exc)
                continue
            twin_body = {"event_id": _str(content.get("event_id")), "twin": entry.get("twin")}
            existing = self.devices.get(fresh.id)
            if existing is not None and entry.get("twin") is None:
                if not full:
                    self._publish(
                        device_topic(fresh.id, "twin/update/result"),
                        error_payload(_str(content.get("event_id")), 400, p.NO_TWIN_KEY),
                    )
                existing.name, existing.description = fresh.name, fresh.description or existing.description
                existing.attributes.update(fresh.attributes)
                existing.spec = fresh.spec or existing.spec
                self._mark(existing.id)
                added.append(existing)
                continue
            device = existing or fresh
            if existing is not None:
                existing.name = fresh.name
                existing.description = fresh.description or existing.description
                existing.attributes.update(fresh.attributes)
                existing.spec = fresh.spec or existing.spec
            else:
                self.devices[device.id] = device
                self._removed.discard(device.id)
            if entry.get("twin") is not None:
                try:
                    changes = p.parse_twin_update(twin_body, message.timestamp or p.now_ms())
                except ProtocolError as exc:
                    log.warning("twin on %s: device %s: twin refused: %s", self.node_name, device.id, exc.reason)
                    changes = {}
                self._apply(device, changes, from_cloud=True)
            self._mark(device.id)
            added.append(device)
        removed: list[dict[str, Any]] = []
        for entry in removed_entries if isinstance(removed_entries, list) else []:
            device_id = entry.get("id") if isinstance(entry, dict) else None
            gone = self.devices.pop(device_id, None) if isinstance(device_id, str) else None
            if gone is None:
                continue
            self._dirty.discard(gone.id)
            self._report.discard(gone.id)
            self._removed.add(gone.id)
            removed.append(gone.to_msg(with_twin=False))
        if added or removed:
            self._publish(
                node_topic(self.node_name, "membership/updated"),
                encode(
                    {
                        "event_id": _str(content.get("event_id")) or _event_id(),
                        "timestamp": p.now_ms(),
                        "added_devices": [d.to_msg(with_twin=True) for d in added] or None,
                        "removed_devices": removed or None,
                    }
                ),
            )
        for device in added:
            self._publish_delta(device)
        if ctx.bus.has_module("mappers"):
            self._out.append(("mappers", message))

    def _on_cloud_twin(self, device_id: str, content: Any) -> None:
        device = self.devices.get(device_id)
        body = _json(content)
        if device is None or not isinstance(body, dict):
            log.warning(
                "twin on %s: desired twin for unknown device %s (or no body) ignored", self.node_name, device_id
            )
            return
        try:
            changes = p.parse_twin_update(body, p.request_timestamp(body))
        except ProtocolError as exc:
            log.warning("twin on %s: desired twin for %s refused: %s", self.node_name, device_id, exc.reason)
            return
        _, document = self._apply(device, changes, from_cloud=True)
        self._count("kubeedge_twin_updates_total", "Twin updates applied, by where they came from", source="cloud")
        if document:
            self._publish(
                device_topic(device_id, "twin/update/document"),
                encode({"event_id": _str(body.get("event_id")), "timestamp": p.now_ms(), "twin": document}),
            )
        self._publish_delta(device)

    def _on_cloud_attributes(self, device_id: str, content: Any) -> None:
        device = self.devices.get(device_id)
        body = _json(content)
        if device is None or not isinstance(body, dict) or not isinstance(body.get("attributes"), dict):
            log.warning("twin on %s: attribute update for %s ignored", self.node_name, device_id)
            return
        fresh = p.parse_device_entry({"id": device_id, "attributes": body["attributes"]})
        device.attributes.update(fresh.attributes)
        self._mark(device_id)
        self._publish(
            device_topic(device_id, "updated"),
            encode(
                {
                    "event_id": _str(body.get("event_id")),
                    "timestamp": p.now_ms(),
                    "attributes": {k: a.to_msg() for k, a in fresh.attributes.items()},
                }
            ),
        )

    def _answer_query(self, ctx: Context, message: Message) -> None:
        resource = message.resource
        if resource in {"devices", "membership"}:
            content: Any = [d.to_msg(with_twin=True) for d in self.devices.values()]
        elif resource.startswith("device/") and resource[len("device/") :] in self.devices:
            content = self.devices[resource[len("device/") :]].to_msg(with_twin=True)
        else:
            ctx.send_resp(message.reply(f"twin: no device for {resource!r}", operation="error", source=self.name))
            return
        ctx.send_resp(message.reply(content, source=self.name))

    # -- shared ---------------------------------------------------------------------------------------

    def _apply(
        self, device: Device, changes: dict[str, TwinChange], *, from_cloud: bool
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Apply twin changes, newest value winning; return (result twins, document)."""
        result: dict[str, Any] = {}
        document: dict[str, Any] = {}
        reported = False
        for key, change in changes.items():
            old = device.twins.get(key)
            if change.delete:
                if old is not None:
                    del device.twins[key]
                    document[key] = {"last": old.to_msg(), "current": None}
                continue
            new = old.copy() if old is not None else Twin()
            if change.type:
                new.type = change.type
            if change.optional is not None:
                new.optional = change.optional
            if change.expected is not None and (old is None or change.expected_ts >= old.expected_ts):
                new.expected, new.expected_ts = change.expected, change.expected_ts
            if not from_cloud and change.actual is not None and (old is None or change.actual_ts >= old.actual_ts):
                new.actual, new.actual_ts = change.actual, change.actual_ts
                new.synced = False
                reported = True
            device.twins[key] = new
            result[key] = new.to_msg()
            document[key] = {"last": old.to_msg() if old is not None else None, "current": new.to_msg()}
        if changes:
            self._mark(device.id, report=reported)
        return result, document

    def _publish_delta(self, device: Device) -> None:
        delta = device.delta()
        if not delta:
            return
        self._publish(
            device_topic(device.id, "twin/update/delta"),
            encode(
                {
                    "event_id": _event_id(),
                    "timestamp": p.now_ms(),
                    # edgecore lists only the properties that have an expected value.
                    "twin": {k: t.to_msg() for k, t in device.twins.items() if t.expected is not None},
                    "delta": delta,
                }
            ),
        )

    def _mark(self, device_id: str, *, report: bool = False) -> None:
        self._dirty.add(device_id)
        if report:
            self._report.add(device_id)

    def _publish(self, topic: str, payload: str) -> None:
        self._out.append(
            (
                "eventbus",
                Message(
                    msg_id=fast_id(), source="twin", group="bus", operation="publish", resource=topic, content=payload
                ),
            )
        )

    def _to_cloud(self, message: Message) -> None:
        self._out.append(("websocket", message))

    def _build_reports(self, ctx: Context) -> list[Message]:
        """Messages for the cloud about unsynced values; marks them synced (the batch then stores that)."""
        if not self._report or not self.cloud_connected or not ctx.bus.has_module("websocket"):
            return []
        messages: list[Message] = []
        for device_id in self._report:
            device = self.devices.get(device_id)
            if device is None:
                continue
            now = p.now_ms()
            twins: dict[str, Any] = {}
            for key, twin in device.twins.items():
                if not twin.synced and twin.actual is not None:
                    twins[key] = {
                        "actual": {"value": twin.actual, "metadata": {"timestamp": twin.actual_ts}},
                        "metadata": {"type": twin.type},
                    }
                    twin.synced = True
            if twins:
                messages.append(
                    Message(
                        msg_id=fast_id(),
                        source="twin",
                        group="twin",
                        operation="update",
                        resource=f"device/{device_id}/twin/edge_updated",
                        content={"event_id": _event_id(), "timestamp": now, "twin": twins},
                    )
                )
            if not device.state_synced:
                device.state_synced = True
                messages.append(
                    Message(
                        msg_id=fast_id(),
                        source="twin",
                        group="twin",
                        operation="update",
                        resource=f"device/{device_id}/state/update",
                        content={"event_id": _event_id(), "timestamp": now, "state": device.state},
                    )
                )
            self._dirty.add(device_id)
        self._report.clear()
        return messages


def _unsynced(device: Device) -> bool:
    return not device.state_synced or any(not t.synced for t in device.twins.values())


def _event_id() -> str:
    return fast_id()


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, bytes | bytearray):
        return bytes(content).decode("utf-8", errors="replace")
    return json.dumps(content)


def _json(content: Any) -> Any:
    if isinstance(content, str | bytes | bytearray):
        try:
            return json.loads(content)
        except ValueError:
            return None
    return content

"""The ``devicecontroller`` module: Device/DeviceModel objects to membership and twin messages, and
reported twins back to ``Device.status`` and to the ``DeviceStatus`` object (as KubeEdge 1.23 writes it).

Down (through ``cloudhub``, group ``twin``): a Device with ``spec.nodeName`` joins that node's
membership (``node/<node>/membership``, ``added_devices`` entries carrying the twin's desired values,
the full Device and its DeviceModel); a changed desired value becomes
``node/<node>/device/<ns>/<name>/twin/cloud_updated``; a Device that moves or goes away leaves the
membership (``removed_devices``). An edge asking for its membership detail gets the whole list.

Up: ``device/<ns>/<name>/twin/edge_updated`` and ``.../state/update`` are coalesced per device (the
newest value always wins, an older report never overwrites a newer one) and written as
``status.twins[].reported`` + ``observedDesired``, ``state`` and ``lastOnlineTime``.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import time
import uuid
from typing import Any

import trio

from kubeedge import BaseModule, Context, Message
from kubeedge.plugins.common.kube import Informer, Kube, kubeconfig_path

__all__ = ["DeviceController"]

log = logging.getLogger("kubeedge.devicecontroller")

GROUP, VERSION = "devices.kubeedge.io", "v1beta1"
ONLINE_STATES = ("online", "ok")


def _ms() -> int:
    return int(time.time() * 1000)


def _rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_of(device: dict[str, Any]) -> str:
    """The node a Device is bound to: v1beta1 ``spec.nodeName``, or v1alpha2's ``spec.nodeSelector`` term."""
    spec = device.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    for term in (spec.get("nodeSelector") or {}).get("nodeSelectorTerms") or []:
        for expression in term.get("matchExpressions") or []:
            if expression.get("operator") == "In" and expression.get("values"):
                return str(expression["values"][0])
    return ""


def desired_values(device: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Property -> desired ``{"value", "metadata"}``: v1beta1 ``spec.properties[].desired``, or v1alpha2's
    ``status.twins[].desired``."""
    found: dict[str, dict[str, Any]] = {}
    for prop in (device.get("spec") or {}).get("properties") or []:
        desired = prop.get("desired") or {}
        if "value" in desired and prop.get("name"):
            found[prop["name"]] = desired
    for twin in (device.get("status") or {}).get("twins") or []:
        desired = twin.get("desired") or {}
        if "value" in desired and twin.get("propertyName") and twin["propertyName"] not in found:
            found[twin["propertyName"]] = desired
    return found


def property_types(model: dict[str, Any] | None) -> dict[str, str]:
    types: dict[str, str] = {}
    for prop in ((model or {}).get("spec") or {}).get("properties") or []:
        kind = prop.get("type")
        if isinstance(kind, dict):  # v1alpha2: {"int": {...}}
            kind = next(iter(kind), "string")
        types[prop.get("name", "")] = str(kind or "string").lower()
    return types


def _device_key(device: dict[str, Any]) -> tuple[str, str]:
    return device["metadata"].get("namespace", ""), device["metadata"]["name"]


def _spec_without_desired(device: dict[str, Any]) -> Any:
    spec = copy.deepcopy(device.get("spec") or {})
    for prop in spec.get("properties") or []:
        prop.pop("desired", None)
    return spec


class DeviceController(BaseModule):
    name = "devicecontroller"
    group = "devicecontroller"
    after = ("apiserver", "cloudhub")

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.writers = int(self.config.get("statusWorkers", 4))
        self.kube: Kube | None = None
        self.ctx: Context | None = None
        self.devices: Informer | None = None
        self.models: Informer | None = None
        self.placed: dict[tuple[str, str], str] = {}  # device -> node whose membership holds it
        # device -> the Device as last told to its edge. Changes are found against this, not against the
        # informer's previous object: that cache also takes this controller's own status writes, whose
        # responses can already carry a user's newer spec, and a desired change would go unnoticed.
        self.told: dict[tuple[str, str], dict[str, Any]] = {}
        self.pending: dict[tuple[str, str], dict[str, Any]] = {}
        self.inflight: set[tuple[str, str]] = set()
        self.status_writes = 0
        self._dirty_send: trio.MemorySendChannel[tuple[str, str]] | None = None

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        self.ctx = ctx
        configured = self.config.get("kubeconfig")
        path = kubeconfig_path(configured, ctx.data_dir)
        if not path.exists():
            raise FileNotFoundError(
                f"devicecontroller: no kubeconfig at {path} (set modules.devicecontroller.kubeconfig)"
            )
        kube: Kube = await trio.to_thread.run_sync(Kube, path)
        self.kube = kube
        custom = kube.custom
        self.models = Informer(
            kube,
            custom.list_cluster_custom_object,
            GROUP,
            VERSION,
            "devicemodels",
            name="devicecontroller devicemodels",
        )
        self.devices = Informer(
            kube, custom.list_cluster_custom_object, GROUP, VERSION, "devices", name="devicecontroller devices"
        )
        dirty_send, dirty_receive = trio.open_memory_channel[tuple[str, str]](100000)
        self._dirty_send = dirty_send
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.models.run, self._on_model)
                await nursery.start(self.devices.run, self._on_device)
                for _ in range(self.writers):
                    nursery.start_soon(self._status_writer, dirty_receive.clone())
                task_status.started()
                async for message in ctx.bus.channel(self.name):
                    try:
                        await self.handle(message)
                    except Exception:
                        log.exception("devicecontroller: handling %s %s failed", message.operation, message.resource)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(kube.close)

    # -- downstream -----------------------------------------------------------------------------------------

    async def send(self, node: str, resource: str, content: dict[str, Any], operation: str = "update") -> None:
        assert self.ctx is not None
        if not self.ctx.bus.has_module("cloudhub"):
            log.debug("devicecontroller: no cloudhub on the bus; %s for node %s dropped", resource, node)
            return
        await self.ctx.send(
            "cloudhub",
            Message(
                source=self.name, group="twin", operation=operation, resource=f"node/{node}/{resource}", content=content
            ),
        )

    def model_of(self, device: dict[str, Any]) -> dict[str, Any] | None:
        assert self.models is not None
        name = ((device.get("spec") or {}).get("deviceModelRef") or {}).get("name")
        if not name:
            return None
        return self.models.get(device["metadata"].get("namespace", ""), name)

    def membership_entry(self, device: dict[str, Any]) -> dict[str, Any]:
        meta = device["metadata"]
        model = self.model_of(device)
        types = property_types(model)
        stamp = _ms()
        twin: dict[str, Any] = {}
        desired = desired_values(device)
        names = [p.get("name") for p in (device.get("spec") or {}).get("properties") or [] if p.get("name")]
        names += [name for name in desired if name not in names]  # v1alpha2: desired values live in status
        for name in names:
            entry: dict[str, Any] = {"metadata": {"type": types.get(name, "string")}}
            if name in desired:
                entry["expected"] = {"value": str(desired[name]["value"]), "metadata": {"timestamp": stamp}}
            twin[name] = entry
        return {
            "id": f"{meta.get('namespace', 'default')}/{meta['name']}",
            "name": meta["name"],
            "state": (device.get("status") or {}).get("state") or "unknown",
            "twin": twin,
            "device": device,
            "model": model,
        }

    async def send_membership(self, node: str, added: list[dict[str, Any]], removed: list[dict[str, Any]]) -> None:
        for device in added:
            self.told[_device_key(device)] = copy.deepcopy(device)
        for device in removed:
            self.told.pop(_device_key(device), None)
        content = {
            "event_id": str(uuid.uuid4()),
            "timestamp": _ms(),
            "added_devices": [self.membership_entry(d) for d in added],
            "removed_devices": [
                {
                    "id": f"{d['metadata'].get('namespace', 'default')}/{d['metadata']['name']}",
                    "name": d["metadata"]["name"],
                }
                for d in removed
            ],
        }
        await self.send(node, "membership", content)

    async def send_desired(self, node: str, device: dict[str, Any], names: list[str]) -> None:
        self.told[_device_key(device)] = copy.deepcopy(device)
        types = property_types(self.model_of(device))
        desired = desired_values(device)
        stamp = _ms()
        twin = {
            name: {
                "expected": {"value": str(desired[name]["value"]), "metadata": {"timestamp": stamp}},
                "metadata": {"type": types.get(name, "string")},
            }
            for name in names
            if name in desired
        }
        meta = device["metadata"]
        await self.send(
            node,
            f"device/{meta.get('namespace', 'default')}/{meta['name']}/twin/cloud_updated",
            {"event_id": str(uuid.uuid4()), "timestamp": stamp, "twin": twin},
        )

    async def _on_model(self, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if kind == "DELETED" or self.devices is None or not self.devices.synced.is_set():
            return
        if old is not None and old.get("spec") == obj.get("spec"):
            return
        # Devices of this model are sent again so mappers learn the new model.
        namespace, name = obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
        by_node: dict[str, list[dict[str, Any]]] = {}
        for device in self.devices.items():
            ref = ((device.get("spec") or {}).get("deviceModelRef") or {}).get("name")
            node = node_of(device)
            if ref == name and node and device["metadata"].get("namespace", "") == namespace:
                by_node.setdefault(node, []).append(device)
        for node, devices in sorted(by_node.items()):
            await self.send_membership(node, devices, [])

    async def _on_device(self, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        node = node_of(obj)
        placed = self.placed.get(key)
        if kind == "DELETED":
            self.placed.pop(key, None)
            self.pending.pop(key, None)
            self.told.pop(key, None)
            if placed:
                await self.send_membership(placed, [], [obj])
            return
        if placed and placed != node:
            self.placed.pop(key, None)
            await self.send_membership(placed, [], [obj])
            placed = None
        if not node:
            return
        if placed is None:
            self.placed[key] = node
            await self.send_membership(node, [obj], [])
            return
        told = self.told.get(key) or old
        if told is None:
            return
        if _spec_without_desired(obj) != _spec_without_desired(told):
            await self.send_membership(node, [obj], [])
            return
        before, after = desired_values(told), desired_values(obj)
        changed = sorted(name for name in after if before.get(name, {}).get("value") != after[name].get("value"))
        if changed:
            await self.send_desired(node, obj, changed)

    # -- upstream -------------------------------------------------------------------------------------------

    async def handle(self, message: Message) -> None:
        parts = message.resource.split("/")
        if len(parts) < 3 or parts[0] != "node":
            log.debug("devicecontroller: ignoring %s %s", message.operation, message.resource)
            return
        node, rest = parts[1], parts[2:]
        if rest[0] == "membership":
            await self.answer_membership(node)
            return
        if rest[0] != "device" or len(rest) < 5:
            log.debug("devicecontroller: ignoring %s %s from node %s", message.operation, message.resource, node)
            return
        key = (rest[1], rest[2])
        content = message.content if isinstance(message.content, dict) else {}
        tail = "/".join(rest[3:])
        if tail == "twin/edge_updated":
            self.merge_reported(key, content)
        elif tail == "state/update":
            state = content.get("state")
            if isinstance(state, str) and state:
                pending = self.pending.setdefault(key, {"twins": {}})
                pending["state"] = state
                if state in ONLINE_STATES:
                    pending["lastOnlineTime"] = _rfc3339()
                self._mark_dirty(key)
        else:
            log.debug("devicecontroller: ignoring %s from node %s", message.resource, node)

    async def answer_membership(self, node: str) -> None:
        assert self.devices is not None
        mine = [d for d in self.devices.items() if node_of(d) == node]
        for device in mine:
            self.placed[(device["metadata"].get("namespace", ""), device["metadata"]["name"])] = node
        # The whole list ("devices"), not an add: the edge drops what is no longer listed, so a device
        # deleted in the cloud while the edge was away goes from the edge too.
        content = {
            "event_id": str(uuid.uuid4()),
            "timestamp": _ms(),
            "devices": [self.membership_entry(d) for d in mine],
        }
        await self.send(node, "membership/detail", content, operation="response")

    def merge_reported(self, key: tuple[str, str], content: dict[str, Any]) -> None:
        twin = content.get("twin")
        if not isinstance(twin, dict):
            return
        pending = self.pending.setdefault(key, {"twins": {}})
        for prop, value in twin.items():
            if not isinstance(value, dict):
                continue
            actual = value.get("actual") or value.get("reported") or {}
            if not isinstance(actual, dict) or "value" not in actual:
                continue
            stamp = int(((actual.get("metadata") or {}).get("timestamp")) or content.get("timestamp") or _ms())
            kind = str((value.get("metadata") or {}).get("type") or "")
            previous = pending["twins"].get(prop)
            if previous is not None and previous[1] > stamp:
                continue  # an older report never overwrites a newer one
            pending["twins"][prop] = (actual["value"], stamp, kind)
        self._mark_dirty(key)

    def _mark_dirty(self, key: tuple[str, str]) -> None:
        if key in self.inflight or self._dirty_send is None:
            return  # the writer busy with it takes the newest values when it is done
        self.inflight.add(key)
        self._dirty_send.send_nowait(key)

    async def _status_writer(self, dirty: trio.MemoryReceiveChannel[tuple[str, str]]) -> None:
        async for key in dirty:
            try:
                while key in self.pending:
                    batch = self.pending.pop(key)
                    try:
                        await self.write_status(key, batch)
                    except Exception as exc:
                        log.warning("devicecontroller: writing the status of %s/%s failed: %s", *key, exc)
            finally:
                self.inflight.discard(key)

    def new_status(self, device: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any]:
        status = copy.deepcopy(device.get("status") or {})
        twins: list[dict[str, Any]] = list(status.get("twins") or [])
        by_name = {t.get("propertyName"): t for t in twins}
        desired = desired_values(device)
        for prop, (value, stamp, kind) in sorted(batch.get("twins", {}).items()):
            entry = by_name.get(prop)
            if entry is None:
                entry = {"propertyName": prop}
                twins.append(entry)
                by_name[prop] = entry
            old_stamp = int(((entry.get("reported") or {}).get("metadata") or {}).get("timestamp") or 0)
            if old_stamp > stamp:
                continue
            metadata = {"timestamp": str(stamp)}
            if kind:
                metadata["type"] = kind
            entry["reported"] = {"value": "" if value is None else str(value), "metadata": metadata}
            if prop in desired:
                observed: dict[str, Any] = {"value": str(desired[prop]["value"])}
                if desired[prop].get("metadata"):
                    observed["metadata"] = {k: str(v) for k, v in desired[prop]["metadata"].items()}
                entry["observedDesired"] = observed
        if twins:
            status["twins"] = twins
        if batch.get("state"):
            status["state"] = batch["state"]
        if batch.get("lastOnlineTime"):
            status["lastOnlineTime"] = batch["lastOnlineTime"]
        elif batch.get("twins") and status.get("state") in (None, "", *ONLINE_STATES):
            status["lastOnlineTime"] = _rfc3339()
        return status

    async def write_status(self, key: tuple[str, str], batch: dict[str, Any]) -> None:
        assert self.kube is not None and self.devices is not None
        custom = self.kube.custom
        namespace, name = key
        device = self.devices.get(namespace, name)
        if device is None:
            device = await self.kube.call(
                custom.get_namespaced_custom_object, GROUP, VERSION, namespace, "devices", name
            )
        status = self.new_status(device, batch)
        updated = await self.kube.call(
            custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "devices",
            name,
            {"status": status},
            _content_type="application/merge-patch+json",
        )
        if isinstance(updated, dict):
            # The informer sees this change soon; until then later batches build on what was written.
            self.devices.cache[key] = updated
        self.status_writes += 1
        await self.write_device_status(device, status)

    async def write_device_status(self, device: dict[str, Any], status: dict[str, Any]) -> None:
        """The DeviceStatus object (same name, owned by the Device), as KubeEdge 1.23 writes reported values."""
        assert self.kube is not None
        custom = self.kube.custom
        meta = device["metadata"]
        namespace, name = meta.get("namespace", "default"), meta["name"]
        body = {"status": {k: v for k, v in status.items() if k in ("twins", "state", "lastOnlineTime")}}
        try:
            await self.kube.call(
                custom.patch_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                "devicestatuses",
                name,
                body,
                _content_type="application/merge-patch+json",
            )
        except Exception as exc:
            if getattr(exc, "status", None) != 404:
                raise
            owner = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Device",
                "name": name,
                "uid": meta.get("uid"),
                "controller": True,
                "blockOwnerDeletion": True,
            }
            created = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "DeviceStatus",
                "metadata": {"name": name, "namespace": namespace, "ownerReferences": [owner]},
                "spec": {},
                **body,
            }
            await self.kube.call(
                custom.create_namespaced_custom_object, GROUP, VERSION, namespace, "devicestatuses", created
            )

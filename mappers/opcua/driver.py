"""The OPC UA driver (asyncua): node ids or browse paths, batched reads, writes, subscriptions as push,
security policy Basic256Sha256 with certificates, and user/password."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asyncua import Client, Node, ua
from asyncua.crypto import security_policies

from kubeedge.mappers.sdk import DeviceUnreachable, Driver, Point, PointError

POLICIES: dict[str, Any] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128Sha256RsaOaep": getattr(security_policies, "SecurityPolicyAes128Sha256RsaOaep", None),
    "Aes256Sha256RsaPss": getattr(security_policies, "SecurityPolicyAes256Sha256RsaPss", None),
}
MODES = {"Sign": ua.MessageSecurityMode.Sign, "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}
INTEGER_TYPES = ("SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64")


@dataclass(frozen=True)
class Target:
    node_id: str | None
    browse_path: tuple[str, ...]
    subscribe: bool
    data_type: str | None


class OpcuaDriver(Driver):
    protocol = "opcua"

    def __init__(self, device: Any) -> None:
        super().__init__(device)
        self.client: Client | None = None
        self.nodes: dict[str, Node] = {}
        self.node_errors: dict[str, str] = {}
        self.variant_types: dict[str, ua.VariantType] = {}
        self.request_timeout = float(self.config.get("timeout", 5000)) / 1000

    def prepare(self, point: Point) -> Target:
        config = point.config
        node_id = config.get("nodeID")
        if node_id:
            ua.NodeId.from_string(node_id)  # raises ValueError-like errors on nonsense
        path = tuple(part for part in str(config.get("browseName") or "").split("/") if part)
        return Target(node_id or None, path, bool(config.get("subscribe", False)), config.get("dataType"))

    def wants_push(self, point: Point) -> bool:
        return bool(point.prepared and point.prepared.subscribe)

    async def connect(self) -> None:
        config = self.config
        client = Client(config["url"], timeout=self.request_timeout)
        if config.get("userName"):
            client.set_user(config["userName"])
            client.set_password(config.get("password") or "")
        policy = config.get("securityPolicy") or "None"
        if policy != "None":
            if not config.get("certificate") or not config.get("privateKey"):
                raise DeviceUnreachable(f"securityPolicy {policy} needs certificate and privateKey files")
            await client.set_security(
                POLICIES[policy],
                certificate=config["certificate"],
                private_key=config["privateKey"],
                server_certificate=config.get("serverCertificate"),
                mode=MODES[config.get("securityMode") or "SignAndEncrypt"],
            )
        self.client = client
        try:
            await client.connect()
        except ua.UaStatusCodeError as exc:
            raise DeviceUnreachable(f"{config['url']} refused the session: {exc}") from None
        except (TimeoutError, OSError, ConnectionError) as exc:
            raise DeviceUnreachable(f"cannot connect to {config['url']}: {exc}") from None
        await self._resolve()

    async def _resolve(self) -> None:
        assert self.client is not None
        for point in self.device.points:
            target: Target | None = point.prepared
            if target is None:
                continue
            if target.node_id:
                self.nodes[point.name] = self.client.get_node(target.node_id)
                continue
            try:
                self.nodes[point.name] = await self.client.nodes.objects.get_child(list(target.browse_path))
            except ua.UaStatusCodeError as exc:
                self.node_errors[point.name] = f"browse path {'/'.join(target.browse_path)} not found: {exc}"

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                await client.disconnect()
            except Exception:  # a session already gone cannot be closed politely
                client.disconnect_socket()

    async def health(self) -> bool:
        if self.client is None:
            return False
        # a real request: a dead session raises here and the SDK reconnects
        state = await self.client.nodes.server_state.read_value()
        return bool(state == ua.ServerState.Running)

    async def read(self, points: Sequence[Point]) -> list[Any]:
        if self.client is None:
            raise DeviceUnreachable("not connected")
        results: dict[str, Any] = {
            p.name: PointError(self.node_errors[p.name]) for p in points if p.name in self.node_errors
        }
        wanted = [p for p in points if p.name in self.nodes]
        if wanted:
            values = await self.client.read_attributes([self.nodes[p.name] for p in wanted])
            for point, data_value in zip(wanted, values, strict=True):
                status = data_value.StatusCode
                if status is not None and not status.is_good():
                    results[point.name] = PointError(f"{status.name}")
                else:
                    results[point.name] = data_value.Value.Value if data_value.Value is not None else None
        return [results.get(p.name, PointError("node not resolved")) for p in points]

    async def _variant_type(self, point: Point, node: Node) -> ua.VariantType:
        target: Target = point.prepared
        if target.data_type:
            return getattr(ua.VariantType, target.data_type)
        if point.name not in self.variant_types:
            self.variant_types[point.name] = await node.read_data_type_as_variant_type()
        return self.variant_types[point.name]

    async def write(self, writes: Sequence[tuple[Point, Any]]) -> list[PointError | None]:
        if self.client is None:
            raise DeviceUnreachable("not connected")
        results: list[PointError | None] = []
        for point, value in writes:
            node = self.nodes.get(point.name)
            if node is None:
                results.append(PointError(self.node_errors.get(point.name, "node not resolved")))
                continue
            try:
                variant_type = await self._variant_type(point, node)
                if variant_type.name in INTEGER_TYPES:
                    value = round(float(value))
                elif variant_type in (ua.VariantType.Float, ua.VariantType.Double):
                    value = float(value)
                elif variant_type == ua.VariantType.Boolean:
                    value = bool(value)
                await node.write_value(ua.DataValue(ua.Variant(value, variant_type)))
                results.append(None)
            except ua.UaStatusCodeError as exc:
                results.append(PointError(str(exc)))
        return results

    async def subscribe(self, points: Sequence[Point], emit: Any) -> None:
        if self.client is None:
            raise DeviceUnreachable("not connected")
        by_node = {self.nodes[p.name].nodeid: p for p in points if p.name in self.nodes}
        for point in points:
            if point.name not in self.nodes:
                emit(point, PointError(self.node_errors.get(point.name, "node not resolved")))

        class Handler:
            def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
                point = by_node.get(node.nodeid)
                if point is not None:
                    emit(point, value)

            def status_change_notification(self, status: Any) -> None:
                lost.set()

        lost = asyncio.Event()
        interval = float(self.config.get("publishingInterval", 100))
        subscription = await self.client.create_subscription(interval, Handler())
        try:
            await subscription.subscribe_data_change([self.nodes[p.name] for p in points if p.name in self.nodes])
            await lost.wait()
            raise DeviceUnreachable("the server ended the subscription")
        finally:
            if self.client is not None:
                try:
                    await asyncio.wait_for(subscription.delete(), 2)
                except Exception:  # the session may be gone already
                    pass

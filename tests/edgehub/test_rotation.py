"""Certificate rotation at 70-90 % of the certificate's life, over the authenticated link, losing nothing."""

from __future__ import annotations

from pathlib import Path

import trio
from link_harness import run_cloud, run_edge, until

from kubeedge import Message
from kubeedge.plugins.common import pki

LIFE_S = 3.0


async def test_certificate_rotates_without_losing_a_message(tmp_path: Path) -> None:
    async with run_cloud(tmp_path / "cloud", edgeCertValidityDays=LIFE_S / 86400) as cloud:
        async with run_edge(tmp_path / "edge", "edge-1", cloud, heartbeat=0.5) as edge:
            await edge.wait_connected()
            first = pki.cert_from_bytes((tmp_path / "edge" / "pki" / "edge.crt").read_bytes())
            sent = 0
            with trio.fail_after(15):
                while edge.hub.rotations < 2 or sent < 150:
                    sent += 1
                    await cloud.feed("edge-1", f"default/configmap/m{sent}", sent)
                    await edge.bus.send(
                        "websocket",
                        Message(
                            source="edged",
                            group="meta",
                            operation="update",
                            resource=f"default/podstatus/p{sent}",
                            content={"n": sent},
                        ),
                    )
                    await trio.sleep(0.02)
            await until(lambda: cloud.hub.acked >= sent, lambda: cloud.hub.ack_event, 15)
            stored = await edge.stored()
            assert {f"default/configmap/m{i}" for i in range(1, sent + 1)} <= set(stored)
            uploads = cloud.recorders["edgecontroller"]
            await until(
                lambda: len({m.resource for m in uploads.messages if "podstatus" in m.resource}) == sent,
                lambda: uploads.changed,
                10,
            )
            latest = pki.cert_from_bytes((tmp_path / "edge" / "pki" / "edge.crt").read_bytes())
            assert latest.serial_number != first.serial_number and cloud.ca.verifies(latest)
            assert pki.node_from_cert(latest) == "edge-1"
            # each rotation reconnects with the new certificate
            await until(lambda: edge.hub.connections >= 3, lambda: cloud.hub.session_changed, 10)
            began = first.not_valid_before_utc.timestamp()
            assert latest.not_valid_before_utc.timestamp() >= began + 0.7 * (LIFE_S + 1) - 1


async def test_renewal_for_another_node_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    async with run_cloud(tmp_path / "cloud") as cloud, run_edge(tmp_path / "edge", "edge-1", cloud) as edge:
        await edge.wait_connected()
        csr, _ = pki.make_csr("edge-2")
        request = Message(
            source="websocket",
            group="resource",
            operation="sign",
            resource="edge.crt",
            content=csr.public_bytes(serialization.Encoding.PEM).decode(),
        )
        reply = await edge.hub.request(request, timeout=5)
        assert reply.operation == "error" and "system:node:edge-1" in reply.content

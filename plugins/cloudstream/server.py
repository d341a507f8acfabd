"""cloudstream's start-up: certificates from the cloud CA, the tunnel listener, the kubelet API server."""

from __future__ import annotations

import json
import logging
import os
import ssl
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import trio

from kubeedge import Context
from kubeedge.plugins.common import pki

from .kubelet import KubeletApp
from .tunnel import TunnelServer

if TYPE_CHECKING:
    from . import CloudStream

log = logging.getLogger("kubeedge.cloudstream")

CLIENT_CN = "kube-apiserver-kubelet-client"


def prepare_pki(data_dir: Path, advertise: list[str]) -> dict[str, str]:
    """The serving pair and the API server's client pair, issued by the cloud CA when missing or stale."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    pki_dir = data_dir / "pki"
    ca = pki.CA.ensure(pki_dir)
    crt, key = pki_dir / "stream.crt", pki_dir / "stream.key"
    wanted = sorted({*advertise, "127.0.0.1", "localhost"} - {"0.0.0.0", "::", ""})
    if not pki.server_cert_covers(ca, crt, wanted):
        cert, private = pki.issue_server_cert(ca, wanted, common_name="cloudstream")
        pki.write_private(key, pki.key_pem(private))
        crt.write_bytes(pki.cert_pem(cert))
        log.info("cloudstream: issued the stream server certificate for %s", ", ".join(wanted))
    client_crt, client_key = pki_dir / "stream-client.crt", pki_dir / "stream-client.key"
    if not (client_crt.exists() and client_key.exists() and ca.verifies(pki.cert_from_bytes(client_crt.read_bytes()))):
        private = pki.generate_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CLIENT_CN)])
        csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(private, hashes.SHA256())
        pki.write_private(client_key, pki.key_pem(private))
        client_crt.write_bytes(pki.cert_pem(pki.sign_csr(ca, csr)))
    return {
        "ca": str(pki_dir / "ca.crt"),
        "cert": str(crt),
        "key": str(key),
        "clientCert": str(client_crt),
        "clientKey": str(client_key),
    }


def tunnel_ssl_context(paths: dict[str, str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=paths["ca"])
    ctx.load_cert_chain(paths["cert"], paths["key"])
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def serve(module: CloudStream, ctx: Context, *, task_status: trio.TaskStatus[Any]) -> None:
    from hypercorn.config import Config

    from kubeedge.plugins.common import front

    from .spdy_exec import serve_spdy

    paths = await trio.to_thread.run_sync(prepare_pki, ctx.data_dir, module.advertise)
    client_ca = str(module.config.get("clientCA") or paths["ca"])
    module.paths = paths
    ssl_ctx = await trio.to_thread.run_sync(tunnel_ssl_context, paths)
    tunnels = TunnelServer(handshake_timeout=module.handshake_timeout)
    app = KubeletApp(tunnels, request_timeout=module.request_timeout)
    app.metrics = ctx.metrics
    module.tunnels, module.app = tunnels, app

    config = Config()
    config.bind = [f"{module.address}:{module.stream_port}"]
    if module.kubelet_port is not None:
        config.bind.append(f"{module.address}:{module.kubelet_port}")
    config.certfile, config.keyfile, config.ca_certs = paths["cert"], paths["key"], client_ca
    config.verify_mode = ssl.CERT_REQUIRED
    config.alpn_protocols = ["http/1.1"]  # websockets over HTTP/1.1 upgrades; h2 adds nothing here
    config.graceful_timeout = 1.0
    config.accesslog = None
    config.errorlog = logging.getLogger("kubeedge.cloudstream.http")
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(tunnels.serve, ssl_ctx, module.address, module.tunnel_port)
        module.tunnel_port = listeners[0].transport_listener.socket.getsockname()[1]
        # hypercorn serves the app; a front in the same process takes the SPDY/3.1 upgrades (exec/attach as a
        # kube-apiserver calls them), which ASGI cannot hand an app
        spdy = partial(serve_spdy, app)
        binds = await nursery.start(
            partial(front.serve, cast(Any, app), config, upgrade=spdy, shutdown_trigger=stop.wait)
        )
        module.stream_port = int(binds[0].rsplit(":", 1)[1])
        if module.kubelet_port is not None and len(binds) > 1:
            module.kubelet_port = int(binds[-1].rsplit(":", 1)[1])
        nursery.start_soon(_keepalive, tunnels, module.ping_interval)
        nursery.start_soon(_count_tunnels, tunnels, ctx)
        state = {
            "tunnelPort": module.tunnel_port,
            "streamPort": module.stream_port,
            "kubeletPort": module.kubelet_port,
            "address": module.address,
            "pid": os.getpid(),
            **paths,
        }
        await trio.Path(ctx.data_dir / "cloudstream.json").write_text(json.dumps(state))
        log.info(
            "cloudstream serving: tunnel wss://%s:%d, kubelet API https://%s:%d",
            module.address,
            module.tunnel_port,
            module.address,
            module.stream_port,
        )
        rules = await _install_rules(module, ctx)
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            app.stopping.set()
            stop.set()
            nursery.cancel_scope.deadline = trio.current_time() + 2
            if rules is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    await rules.remove()


async def _install_rules(module: CloudStream, ctx: Context) -> Any:
    """The iptables DNAT a real API server needs (see iptables.py), when the config and the host allow."""
    import ipaddress

    from .iptables import DEFAULT_CHAIN, DEFAULT_NODE_PORT, StreamRules, decide, iptables_command

    settings = dict(module.config.get("iptables") or {})
    command = iptables_command()
    wanted, why = decide(
        str(settings.get("mode", "auto")),
        embedded_api="apiserver" in ctx.profile.modules,
        is_root=os.geteuid() == 0,
        iptables=command,
    )
    if not wanted:
        log.log(logging.WARNING if "DNAT" in why else logging.DEBUG, "cloudstream: no iptables rules: %s", why)
        return None
    assert command is not None

    def is_ip(text: str) -> bool:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            return False
        return text not in ("0.0.0.0", "::")

    default = next((a for a in [module.address, *module.advertise] if is_ip(a)), "127.0.0.1")
    rules = StreamRules(
        chain=str(settings.get("chain", DEFAULT_CHAIN)),
        node_port=int(settings.get("nodePort", DEFAULT_NODE_PORT)),
        to_address=str(settings.get("toAddress") or default),
        to_port=module.stream_port,
        command=command,
    )
    await rules.install()
    module.rules = rules
    return rules


async def _count_tunnels(tunnels: TunnelServer, ctx: Context) -> None:
    while True:
        ctx.metrics.set("kubeedge_stream_tunnels", len(tunnels.sessions), help="Edge nodes with a stream tunnel up")
        await tunnels.changed.wait()


async def _keepalive(tunnels: TunnelServer, interval: float) -> None:
    """Ping every tunnel; one that does not answer within the interval is closed (its node goes offline)."""

    async def ping(session: Any) -> None:
        with trio.move_on_after(interval) as scope:
            try:
                await session.ws.ping()
            except Exception as exc:  # closed meanwhile: the session's reader sees to it
                log.debug("cloudstream: ping to node %s failed: %r", session.node, exc)
        if scope.cancelled_caught:
            log.warning("cloudstream: node %s does not answer pings; closing its tunnel", session.node)
            await session.close()

    while True:
        await trio.sleep(interval)
        async with trio.open_nursery() as nursery:
            for session in list(tunnels.sessions.values()):
                nursery.start_soon(ping, session)

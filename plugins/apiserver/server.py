"""The ``apiserver`` module: the embedded Kubernetes-compatible API, its credentials and its controllers.

On start it opens the store in the node's database, makes sure the default namespaces exist, serves
HTTPS with a certificate from the cloud's CA (``<data-dir>/pki/ca.crt``; the serving pair is
``<data-dir>/pki/apiserver.{crt,key}``), writes ``<data-dir>/kubeconfig.yaml`` with the bound address and
a bearer token (kept in ``<data-dir>/pki/apiserver.token`` across restarts), starts the scheduler and
the deployment controller, and only then reports itself started. ``port``, ``url`` and
``kubeconfig_path`` are set on the module object before that.
"""

from __future__ import annotations

import base64
import logging
import secrets
from functools import partial
from pathlib import Path
from typing import Any

import trio
import yaml

from kubeedge import BaseModule, Context

__all__ = ["ApiServer"]

log = logging.getLogger("kubeedge.apiserver")


class ApiServer(BaseModule):
    name = "apiserver"
    group = "apiserver"
    on_failure = "stop"

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.port: int | None = None
        self.url: str = ""
        self.kubeconfig_path: Path | None = None
        self.token: str = ""
        self.ca_path: Path | None = None
        self.store: Any = None
        self.service: Any = None
        self.app: Any = None

    def _credentials(self, data_dir: Path, address: str) -> tuple[Path, Path, Path, str]:
        from kubeedge.plugins.common import pki

        pki_dir = data_dir / "pki"
        ca = pki.CA.ensure(pki_dir)
        crt, key = pki_dir / "apiserver.crt", pki_dir / "apiserver.key"
        addresses = sorted({"127.0.0.1", "localhost", address} - {"0.0.0.0", "::", ""})
        reuse = False
        if crt.exists() and key.exists():
            cert = pki.cert_from_bytes(crt.read_bytes())
            reuse = ca.verifies(cert) and self._covers(cert, addresses)
        if not reuse:
            cert, private = pki.issue_server_cert(ca, addresses, common_name="kube-apiserver")
            pki.write_private(key, pki.key_pem(private))
            crt.write_bytes(pki.cert_pem(cert))
        token_file = pki_dir / "apiserver.token"
        if token_file.exists() and token_file.read_text().strip():
            token = token_file.read_text().strip()
        else:
            token = secrets.token_urlsafe(32)
            pki.write_private(token_file, token.encode())
        return pki_dir / "ca.crt", crt, key, token

    @staticmethod
    def _covers(cert: Any, addresses: list[str]) -> bool:
        from cryptography import x509

        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        have = {str(v) for v in sans.get_values_for_type(x509.IPAddress)} | set(sans.get_values_for_type(x509.DNSName))
        return set(addresses) <= have

    def _write_kubeconfig(self, path: Path, ca_path: Path) -> None:
        ca_data = base64.b64encode(ca_path.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubeedge", "cluster": {"server": self.url, "certificate-authority-data": ca_data}}],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [
                {"name": "kubeedge", "context": {"cluster": "kubeedge", "user": "admin", "namespace": "default"}}
            ],
            "current-context": "kubeedge",
            "preferences": {},
        }
        from kubeedge.plugins.common import pki

        pki.write_private(path, yaml.safe_dump(config, sort_keys=False).encode())

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        from hypercorn.config import Config

        from kubeedge.plugins.common import front

        from .app import ApiApp
        from .resources import Registry
        from .scheduler import run_controllers
        from .service import ApiService
        from .spdy import serve_spdy
        from .store import Store

        address = str(self.config.get("address", "127.0.0.1"))
        port = int(self.config.get("port", 6443))
        data_dir = ctx.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        ca_path, crt, key, self.token = await trio.to_thread.run_sync(self._credentials, data_dir, address)
        self.ca_path = ca_path

        registry = Registry.default()
        self.store = Store(
            ctx.database(),
            window=int(self.config.get("watchCacheSize", 4096)),
            watch_buffer=int(self.config.get("watchBuffer", 1000)),
        )
        await self.store.open()
        self.service = ApiService(self.store, registry)
        self.app = ApiApp(
            self.service, registry, self.token, bookmark_interval=float(self.config.get("bookmarkInterval", 30.0))
        )

        config = Config()
        config.bind = [f"{address}:{port}"]
        config.certfile = str(crt)
        config.keyfile = str(key)
        config.graceful_timeout = 1.0
        config.accesslog = None
        config.errorlog = logging.getLogger("kubeedge.apiserver.http")
        config.keep_alive_timeout = 90
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.store.run)
            await self.service.ensure_namespaces()
            # hypercorn serves the app; the front takes pods/exec|attach upgraded to SPDY/3.1 (spdy.py), which
            # ASGI cannot hand an app, and passes every other connection to hypercorn in this process
            upgrade = partial(serve_spdy, self.app)
            binds = await nursery.start(
                partial(front.serve, self.app, config, upgrade=upgrade, shutdown_trigger=stop.wait)
            )
            bound = binds[0].rsplit(":", 1)
            self.port = int(bound[1])
            host = "127.0.0.1" if address in ("0.0.0.0", "::", "") else address
            self.url = f"https://{host}:{self.port}"
            self.kubeconfig_path = data_dir / "kubeconfig.yaml"
            await trio.to_thread.run_sync(self._write_kubeconfig, self.kubeconfig_path, ca_path)
            if self.config.get("scheduler", True):
                await nursery.start(run_controllers, self.service)
            log.info("apiserver on %s (kubeconfig %s)", self.url, self.kubeconfig_path)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self.app.stopping.set()
                stop.set()

"""The ``cloudstream`` module: ``kubectl logs/exec/attach`` to edge pods, through a tunnel each edge dials.

It serves two ports, as KubeEdge's cloudcore does:

- ``tunnelPort`` (10004): edges' ``edgestream`` dial ``wss://<cloud>:10004/v1/kubeedge/connect`` with their
  node certificate (mutual TLS against the cloud CA, ``<data-dir>/pki/ca.crt``); see :mod:`.tunnel`.
- ``streamPort`` (10003): the kubelet API an API server calls (HTTPS; clients must show a certificate of
  ``clientCA``, default the cloud CA); see :mod:`.kubelet`. ``kubeletPort`` (e.g. 10350) binds the same API
  once more. A real cluster's API server calls nodes at ``<node IP>:10350``: with ``iptables`` (on by default
  when there is no embedded API server and the process is root) that port is DNATed to ``streamPort`` on this
  host, as KubeEdge's iptables manager does; see :mod:`.iptables`.

The serving certificate is ``<data-dir>/pki/stream.{crt,key}`` (from the cloud CA); the client certificate
the embedded API server uses is ``<data-dir>/pki/stream-client.{crt,key}``. Bound ports and those paths are
written to ``<data-dir>/cloudstream.json`` and set on the module object before it reports started.
"""

from __future__ import annotations

from typing import Any

import trio

from kubeedge import BaseModule, Context, hookimpl

__all__ = ["CloudStream"]

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "address": {"type": "string", "description": "address both servers listen on (default 0.0.0.0)"},
        "tunnelPort": {"type": "integer", "minimum": 0, "maximum": 65535, "description": "edges' tunnel; 0 picks one"},
        "streamPort": {"type": "integer", "minimum": 0, "maximum": 65535, "description": "kubelet API; 0 picks one"},
        "kubeletPort": {
            "type": "integer",
            "minimum": 0,
            "maximum": 65535,
            "description": "serve the kubelet API on this port too (10350 with a real cluster); absent: not",
        },
        "advertiseAddress": {"type": "array", "items": {"type": "string"}, "description": "SANs of the cert"},
        "clientCA": {"type": "string", "description": "CA file for API server client certs (default: cloud CA)"},
        "requestTimeout": {"type": "number", "exclusiveMinimum": 0, "description": "wait for the edge's answer"},
        "handshakeTimeout": {"type": "number", "exclusiveMinimum": 0},
        "pingInterval": {"type": "number", "exclusiveMinimum": 0, "description": "tunnel keepalive (seconds)"},
        "iptables": {
            "type": "object",
            "additionalProperties": False,
            "description": "DNAT of the nodes' kubelet port to streamPort, for a real API server (see iptables.py)",
            "properties": {
                "mode": {
                    "enum": ["auto", "on", "off"],
                    "description": "auto (default): on with a real cluster (no embedded apiserver) when root",
                },
                "chain": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,28}$", "description": "nat chain name"},
                "nodePort": {"type": "integer", "minimum": 1, "maximum": 65535, "description": "default 10350"},
                "toAddress": {"type": "string", "description": "DNAT target (default advertiseAddress, 127.0.0.1)"},
            },
        },
    },
}


class CloudStream(BaseModule):
    name = "cloudstream"
    group = "cloudstream"
    after = ("cloudhub", "apiserver")  # they create the cloud CA when they are loaded; never two CAs

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        c = self.config
        self.address: str = str(c.get("address", "0.0.0.0"))
        self.tunnel_port: int = int(c.get("tunnelPort", 10004))
        self.stream_port: int = int(c.get("streamPort", 10003))
        self.kubelet_port: int | None = int(c["kubeletPort"]) if "kubeletPort" in c else None
        self.advertise: list[str] = list(c.get("advertiseAddress") or [])
        self.request_timeout = float(c.get("requestTimeout", 10.0))
        self.handshake_timeout = float(c.get("handshakeTimeout", 10.0))
        self.ping_interval = float(c.get("pingInterval", 30.0))
        self.tunnels: Any = None
        self.app: Any = None
        self.paths: dict[str, str] = {}
        self.rules: Any = None  # the iptables rules kept while serving, if any

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        from .server import serve

        await serve(self, ctx, task_status=task_status)


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    return CONFIG_SCHEMA


@hookimpl
def kubeedge_module(config: dict[str, Any]) -> CloudStream:
    return CloudStream(config)

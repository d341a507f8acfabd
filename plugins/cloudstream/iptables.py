"""The stream's iptables rules: a real API server's kubelet requests for edge nodes arrive at cloudstream.

A real kube-apiserver serves ``kubectl logs/exec/top`` for a pod by calling the node's kubelet at
``<node InternalIP>:<kubelet port>``, the port the node reports (10350 for edge nodes, as KubeEdge's edgecore
reports it). Edge nodes are usually not reachable from the API server, and nothing listens there anyway: on
the host the API server runs on, that port is DNATed to cloudstream's ``streamPort``, which answers through
the node's tunnel, finding the node by the address the request was for. KubeEdge's cloudcore keeps the same
rules with its iptables manager; without them ``kubectl logs`` fails with "10350: connection refused",
one of KubeEdge's most reported problems.

The rules live in one chain of the ``nat`` table (``KUBEEDGE-STREAM`` by default), entered from ``OUTPUT``
(the API server on this host) and, when the target is not a loopback address, ``PREROUTING`` (API servers
routed through this host), for TCP to the node port only. Installing is idempotent (the chain is flushed and
filled again, the jumps added once), so a cloud that was killed leaves nothing that a restart does not
replace; a clean stop removes the jumps and the chain.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
from dataclasses import dataclass

import trio

__all__ = ["IptablesError", "StreamRules", "decide"]

log = logging.getLogger("kubeedge.cloudstream")

DEFAULT_CHAIN = "KUBEEDGE-STREAM"
DEFAULT_NODE_PORT = 10350


class IptablesError(Exception):
    pass


def decide(mode: str, *, embedded_api: bool, is_root: bool, iptables: str | None) -> tuple[bool, str]:
    """Whether to keep the rules, and why (for the log). ``auto`` keeps them for a real cluster only: the
    embedded API server calls cloudstream directly and needs none."""
    if mode == "off":
        return False, "iptables.mode is off"
    if mode == "auto" and embedded_api:
        return False, "the embedded API server calls cloudstream directly"
    missing = ""
    if iptables is None:
        missing = "the iptables command is not on PATH"
    elif not is_root:
        missing = "this process is not root"
    if missing:
        if mode == "on":
            raise IptablesError(f"cloudstream: iptables.mode is on, but {missing}")
        return False, (
            f"{missing}; a real API server reaches edge nodes' kubelet port only once it is DNATed to cloudstream"
        )
    return True, "a real API server reaches edge nodes' kubelet port through them"


@dataclass
class StreamRules:
    """DNAT of TCP ``node_port`` to ``to_address:to_port`` in ``chain`` of the nat table."""

    chain: str
    node_port: int
    to_address: str
    to_port: int
    command: str = "iptables"

    @property
    def parents(self) -> tuple[str, ...]:
        loopback = ipaddress.ip_address(self.to_address).is_loopback
        return ("OUTPUT",) if loopback else ("OUTPUT", "PREROUTING")

    def jump(self, parent: str) -> list[str]:
        return [parent, "-p", "tcp", "--dport", str(self.node_port), "-j", self.chain]

    async def _run(self, *args: str, check: bool = True) -> bool:
        result = await trio.run_process(
            [self.command, "-w", "5", "-t", "nat", *args], capture_stdout=True, capture_stderr=True, check=False
        )
        if check and result.returncode != 0:
            raise IptablesError(f"iptables -t nat {' '.join(args)}: {result.stderr.decode(errors='replace').strip()}")
        return result.returncode == 0

    async def install(self) -> None:
        if not await self._run("-N", self.chain, check=False):
            await self._run("-F", self.chain)  # it exists (a cloud that was killed): fill it again
        target = f"{self.to_address}:{self.to_port}"
        await self._run("-A", self.chain, "-p", "tcp", "--dport", str(self.node_port), "-j", "DNAT", "--to", target)
        for parent in self.parents:
            if not await self._run("-C", *self.jump(parent), check=False):
                await self._run("-A", *self.jump(parent))
        log.info(
            "cloudstream: iptables nat chain %s: tcp port %d -> %s (%s)",
            self.chain,
            self.node_port,
            target,
            ", ".join(self.parents),
        )

    async def remove(self) -> None:
        for parent in ("OUTPUT", "PREROUTING"):
            while await self._run("-D", *self.jump(parent), check=False):
                pass
        await self._run("-F", self.chain, check=False)
        await self._run("-X", self.chain, check=False)
        log.info("cloudstream: iptables nat chain %s removed", self.chain)


def iptables_command() -> str | None:
    return shutil.which("iptables") or next(
        (p for p in ("/usr/sbin/iptables", "/sbin/iptables") if os.access(p, os.X_OK)), None
    )

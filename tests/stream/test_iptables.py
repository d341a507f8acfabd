"""cloudstream's iptables DNAT, as a real API server uses it: a kubelet request for ``<node IP>:<kubelet
port>``, where nothing listens, reaches the node's pod through cloudstream and the tunnel."""

from __future__ import annotations

import socket
import ssl
from typing import Any

import httpx
import pytest
import trio

from kubeedge.plugins.cloudstream.iptables import IptablesError, decide, iptables_command

from .conftest import SESSION, Cluster, make_pod

CHAIN = f"KE-TEST-{SESSION}".upper()


def unused_port() -> int:
    """A port nothing listens on (bound and released): only the DNAT can answer there."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


NODE_PORT = unused_port()


@pytest.fixture
def cloudstream_config() -> dict[str, Any]:
    return {"iptables": {"mode": "on", "chain": CHAIN, "nodePort": NODE_PORT, "toAddress": "127.0.0.1"}}


async def iptables(*args: str) -> trio.CompletedProcess[bytes]:
    command = iptables_command()
    assert command is not None, "iptables is not installed (tests/run.sh installs it)"
    return await trio.run_process(
        [command, "-w", "5", "-t", "nat", *args], capture_stdout=True, capture_stderr=True, check=False
    )


async def test_the_kubelet_port_of_a_node_reaches_its_pod_through_the_dnat(cluster: Cluster) -> None:
    pod = make_pod("dnat", cluster.node_name, [{"name": "main", "command": ["sh", "-c", "echo via dnat; sleep 3600"]}])
    await cluster.create_pod(pod)
    rules = (await iptables("-S", CHAIN)).stdout.decode()
    assert f"--dport {NODE_PORT}" in rules and "DNAT" in rules, rules
    assert f"-j {CHAIN}" in (await iptables("-S", "OUTPUT")).stdout.decode()

    paths = cluster.cloudstream.paths
    context = ssl.create_default_context(cafile=paths["ca"])
    context.load_cert_chain(paths["clientCert"], paths["clientKey"])
    # no X-Kubeedge-Node header: the node is the one whose InternalIP the request went to, as with a real API server
    async with httpx.AsyncClient(verify=context, timeout=10) as client:
        reply = await client.get(f"https://127.0.0.1:{NODE_PORT}/containerLogs/default/dnat/main")
    assert reply.status_code == 200, reply.text
    assert reply.text == "via dnat\n"

    await cluster.cloud.stop()  # a clean stop takes the rules away
    assert (await iptables("-S", CHAIN)).returncode != 0
    assert f"-j {CHAIN}" not in (await iptables("-S", "OUTPUT")).stdout.decode()


def test_when_the_rules_are_kept() -> None:
    assert decide("auto", embedded_api=True, is_root=True, iptables="/usr/sbin/iptables")[0] is False
    assert decide("auto", embedded_api=False, is_root=True, iptables="/usr/sbin/iptables")[0] is True
    assert decide("on", embedded_api=True, is_root=True, iptables="/usr/sbin/iptables")[0] is True
    assert decide("off", embedded_api=False, is_root=True, iptables="/usr/sbin/iptables")[0] is False
    kept, why = decide("auto", embedded_api=False, is_root=False, iptables="/usr/sbin/iptables")
    assert not kept and "not root" in why and "DNAT" in why
    with pytest.raises(IptablesError, match="iptables command is not on PATH"):
        decide("on", embedded_api=False, is_root=True, iptables=None)

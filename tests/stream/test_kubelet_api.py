"""cloudstream's kubelet API (what an API server calls) through the tunnel to a pod on a real edge."""

from __future__ import annotations

import json
import ssl
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from .conftest import Cluster, make_pod


def client_ssl(cluster: Cluster) -> ssl.SSLContext:
    paths = cluster.cloudstream.paths
    ctx = ssl.create_default_context(cafile=paths["ca"])
    ctx.load_cert_chain(paths["clientCert"], paths["clientKey"])
    return ctx


def base(cluster: Cluster) -> str:
    return f"https://127.0.0.1:{cluster.cloudstream.stream_port}"


async def exec_ws(cluster: Cluster, path: str, stdin: bytes = b"") -> tuple[bytes, bytes, dict[str, Any]]:
    out, err = b"", b""
    status: dict[str, Any] = {}
    url = f"wss://127.0.0.1:{cluster.cloudstream.stream_port}{path}"
    async with open_websocket_url(
        url,
        ssl_context=client_ssl(cluster),
        subprotocols=["v5.channel.k8s.io"],
        extra_headers=[(b"x-kubeedge-node", cluster.node_name.encode())],
        connect_timeout=10,
    ) as ws:
        assert ws.subprotocol == "v5.channel.k8s.io"
        if stdin:
            await ws.send_message(b"\x00" + stdin)
            await ws.send_message(b"\xff\x00")  # v5: stdin closed
        with trio.fail_after(20):
            while not status:
                message = await ws.get_message()
                assert isinstance(message, bytes)
                channel, data = message[0], message[1:]
                if channel == 1:
                    out += data
                elif channel == 2:
                    err += data
                elif channel == 3:
                    status = json.loads(data)
    return out, err, status


async def test_logs_exec_and_offline_through_the_tunnel(cluster: Cluster) -> None:
    pod = make_pod(
        "talker",
        cluster.node_name,
        [{"name": "main", "command": ["sh", "-c", "for i in 1 2 3; do echo line $i; done; sleep 3600"]}],
    )
    await cluster.create_pod(pod)
    async with httpx.AsyncClient(verify=client_ssl(cluster), base_url=base(cluster)) as client:
        headers = {"x-kubeedge-node": cluster.node_name}
        seen = b""
        with trio.fail_after(10):  # follow: the lines arrive as the container writes them
            async with client.stream("GET", "/containerLogs/default/talker/main?follow=true", headers=headers) as reply:
                assert reply.status_code == 200
                async for chunk in reply.aiter_raw():
                    seen += chunk
                    if seen.count(b"\n") >= 3:
                        break
        assert seen == b"line 1\nline 2\nline 3\n"
        reply = await client.get("/containerLogs/default/talker/main", headers=headers)
        assert reply.text == "line 1\nline 2\nline 3\n"
        reply = await client.get("/containerLogs/default/talker/main", params={"tailLines": 1}, headers=headers)
        assert reply.text == "line 3\n"
        # the node's address routes too, as a real API server's request for <InternalIP>:10350 arrives
        reply = await client.get(
            "/containerLogs/default/talker/main", params={"tailLines": 1}, headers={"host": "127.0.0.1:10350"}
        )
        assert reply.text == "line 3\n"
        reply = await client.get("/containerLogs/default/nosuch/main", headers=headers)
        assert reply.status_code == 404
        assert reply.json()["kind"] == "Status" and "nosuch" in reply.json()["message"]

        out, err, status = await exec_ws(
            cluster,
            "/exec/default/talker/main?command=sh&command=-c&command=echo+hi%3B+echo+oops+>%262%3B+exit+3&output=1&error=1",
        )
        assert (out, err) == (b"hi\n", b"oops\n")
        assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
        assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]

        out, _, status = await exec_ws(
            cluster, "/exec/default/talker/main?command=cat&input=1&output=1&error=1", stdin=b"round trip\n"
        )
        assert out == b"round trip\n" and status == {"metadata": {}, "status": "Success"}

        assert cluster.edge is not None
        await cluster.edge.stop()
        with trio.fail_after(10):
            while cluster.node_name in cluster.cloudstream.tunnels.sessions:
                await cluster.cloudstream.tunnels.changed.wait()
        with trio.fail_after(5):
            reply = await client.get("/containerLogs/default/talker/main", headers=headers)
        assert reply.status_code == 503
        assert cluster.node_name in reply.json()["message"] and "offline" in reply.json()["message"]
        try:
            await exec_ws(cluster, "/exec/default/talker/main?command=true&output=1")
        except ConnectionRejected as exc:
            assert exc.status_code == 503 and cluster.node_name.encode() in (exc.body or b"")
        else:
            raise AssertionError("an exec to an offline node was accepted")


async def test_tty_exec_with_resize(cluster: Cluster) -> None:
    pod = make_pod("term", cluster.node_name, [{"name": "main", "command": ["sleep", "3600"]}])
    await cluster.create_pod(pod)
    url = (
        f"wss://127.0.0.1:{cluster.cloudstream.stream_port}/exec/default/term/main"
        "?command=sh&command=-c&command=read+go%3B+stty+size%3B+exit+7&input=1&output=1&tty=1"
    )
    out = b""
    status: dict[str, Any] = {}
    async with open_websocket_url(
        url,
        ssl_context=client_ssl(cluster),
        subprotocols=["v4.channel.k8s.io"],  # the older protocol works too
        extra_headers=[(b"x-kubeedge-node", cluster.node_name.encode())],
        connect_timeout=10,
    ) as ws:
        assert ws.subprotocol == "v4.channel.k8s.io"
        await ws.send_message(b"\x04" + json.dumps({"Width": 100, "Height": 40}).encode())
        await ws.send_message(b"\x00go\r")
        with trio.fail_after(20):
            while not status:
                message = await ws.get_message()
                assert isinstance(message, bytes)
                if message[0] == 1:
                    out += message[1:]
                elif message[0] == 3:
                    status = json.loads(message[1:])
                else:
                    assert message[0] != 2, "a terminal has no separate stderr"
    assert b"40 100" in out, out
    assert status["reason"] == "NonZeroExitCode" and status["details"]["causes"][0]["message"] == "7"


async def test_many_sessions_share_the_tunnel_and_it_comes_back(cluster: Cluster) -> None:
    script = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"
    await cluster.create_pod(make_pod("multi", cluster.node_name, [{"name": "main", "command": ["sh", "-c", script]}]))
    results: dict[int, tuple[bytes, bytes, dict[str, Any]]] = {}
    ticks = b""
    headers = {"x-kubeedge-node": cluster.node_name}

    async def one(n: int) -> None:
        path = f"/exec/default/multi/main?command=sh&command=-c&command=echo+out{n}%3B+exit+{n}&output=1&error=1"
        results[n] = await exec_ws(cluster, path)

    async with httpx.AsyncClient(verify=client_ssl(cluster), base_url=base(cluster), timeout=None) as client:
        with trio.fail_after(30):
            async with client.stream("GET", "/containerLogs/default/multi/main?follow=1", headers=headers) as reply:
                assert reply.status_code == 200
                async with trio.open_nursery() as nursery:
                    for n in range(8):
                        nursery.start_soon(one, n)
                    async for chunk in reply.aiter_raw():  # the follow stream goes on while the execs run
                        ticks += chunk
                        if len(results) == 8 and ticks.count(b"\n") >= 3:
                            break
    assert b"tick 0\ntick 1\n" in ticks
    for n in range(8):
        out, _, status = results[n]
        assert out == f"out{n}\n".encode()
        assert status["status"] == ("Success" if n == 0 else "Failure")

    # the cloud drops the tunnel: the edge dials again and requests work as before
    old = cluster.cloudstream.tunnels.sessions[cluster.node_name]
    await old.close()
    with trio.fail_after(15):
        while cluster.cloudstream.tunnels.sessions.get(cluster.node_name) in (None, old):
            await cluster.cloudstream.tunnels.changed.wait()
    out, _, status = await exec_ws(cluster, "/exec/default/multi/main?command=echo&command=back&output=1")
    assert out == b"back\n" and status["status"] == "Success"

"""exec/attach over SPDY/3.1 on a real edge (podman): the real kubectl with websockets off (what kubectl before
1.30 speaks) through the embedded API server, and cloudstream's kubelet API called as a kube-apiserver calls
a kubelet (our codec as the client, with the stream client certificate)."""

from __future__ import annotations

import json
import os
import ssl
from typing import Any
from urllib.parse import urlencode

import trio

from kubeedge.plugins.common.front import PrefixedStream, read_head
from kubeedge.plugins.common.spdy_session import SpdyConnection, SpdyStream

from .conftest import Cluster, kubectl_attach_to_a_ticker, kubectl_in_terminal, make_pod

NO_WEBSOCKETS = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}


def client_ssl(cluster: Cluster) -> ssl.SSLContext:
    paths = cluster.cloudstream.paths
    ctx = ssl.create_default_context(cafile=paths["ca"])
    ctx.load_cert_chain(paths["clientCert"], paths["clientKey"])
    return ctx


async def spdy_kubectl(cluster: Cluster, *args: str, stdin: bytes = b"") -> Any:
    with trio.fail_after(30):
        return await trio.run_process(
            cluster.kubectl_command(*args),
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=dict(os.environ, HOME=cluster.home, **NO_WEBSOCKETS),
        )


PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io")


async def upgrade(
    cluster: Cluster,
    path: str,
    params: list[tuple[str, str]],
    protocols: tuple[str, ...] = PROTOCOLS,
    *,
    by_address: bool = False,
) -> tuple[int, bytes, Any]:
    """POST the upgrade to cloudstream's kubelet port; (status, response head + body or b"", raw stream).
    ``by_address``: no X-Kubeedge-Node header, the node found by its InternalIP in Host, as a real API
    server's request for ``<node IP>:10350`` arrives."""
    port = cluster.cloudstream.stream_port
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    tls = trio.SSLStream(tcp, client_ssl(cluster), server_hostname="127.0.0.1", https_compatible=True)
    offers = "".join(f"X-Stream-Protocol-Version: {p}\r\n" for p in protocols)
    node = "" if by_address else f"X-Kubeedge-Node: {cluster.node_name}\r\n"
    host = "127.0.0.1:10350" if by_address else f"127.0.0.1:{port}"
    request = (
        f"POST {path}?{urlencode(params)} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n"
        f"Upgrade: SPDY/3.1\r\n{offers}{node}Content-Length: 0\r\n\r\n"
    )
    await tls.send_all(request.encode())
    got = await read_head(tls)
    assert got is not None, "cloudstream closed without an answer"
    head, rest = got
    code = int(head.split(b" ", 2)[1])
    if code != 101:
        while data := await tls.receive_some():
            rest += data
        await tls.aclose()
        return code, head + rest, None
    return code, head, PrefixedStream(tls, rest)


async def test_spdy_client_against_the_kubelet_port(cluster: Cluster) -> None:
    """As a kube-apiserver calls kubelet: streams by streamtype, stdin round trip, separated stdout/stderr,
    the exit code in the v4 Status, and flow control kept (the server stops at the 64 KiB window we grant)."""
    await cluster.create_pod(make_pod("spdy", cluster.node_name, [{"name": "main", "command": ["sleep", "3600"]}]))
    script = "cat; echo err >&2; head -c 200000 /dev/zero; exit 3"
    params = [("command", "sh"), ("command", "-c"), ("command", script), ("stdin", "1"), ("stdout", "1")]
    params.append(("stderr", "1"))
    code, head, raw = await upgrade(cluster, "/exec/default/spdy/main", params)
    assert code == 101, head
    assert b"\r\nupgrade: spdy/3.1\r\n" in head.lower()
    assert b"x-stream-protocol-version: v4.channel.k8s.io" in head.lower()
    conn = SpdyConnection(raw, server=False, name="test client")
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        with trio.fail_after(20):
            error = await conn.open_stream([("streamtype", "error")])
            stdin = await conn.open_stream([("streamtype", "stdin")])
            stdout = await conn.open_stream([("streamtype", "stdout")])
            stderr = await conn.open_stream([("streamtype", "stderr")])
            await stdin.send(b"hello over spdy\n")
            await stdin.close()
            # read nothing until the server has filled the 64 KiB session window we granted
            while stdout._buffered + stderr._buffered < 65536:
                stdout._readable = trio.Event()
                stderr._readable = stdout._readable
                await stdout._readable.wait()
            await conn.ping()  # whatever the server sent before our PING's answer has arrived now
            assert stdout._buffered + stderr._buffered == 65536 and conn.window_violations == 0
            results: dict[str, bytes] = {}

            async def read(name: str, stream: SpdyStream) -> None:
                results[name] = await stream.receive_all()

            async with trio.open_nursery() as readers:
                for name, stream in (("out", stdout), ("err", stderr), ("status", error)):
                    readers.start_soon(read, name, stream)
        assert conn.window_violations == 0
        assert results["out"] == b"hello over spdy\n" + bytes(200000)
        assert results["err"] == b"err\n"
        status = json.loads(results["status"])
        assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode", status
        assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
        with trio.fail_after(10):  # the server says GOAWAY and waits for us to close
            while not conn.goaway_received:
                await conn.ping()
        await raw.aclose()
        nursery.cancel_scope.cancel()

    # v3 (an older API server), the node found by its address: the error stream carries the error's text
    params = [("command", "sh"), ("command", "-c"), ("command", "echo v3; exit 4"), ("output", "1")]
    v3 = ("v3.channel.k8s.io",)
    code, head, raw = await upgrade(cluster, "/exec/default/spdy/main", params, v3, by_address=True)
    assert code == 101 and b"x-stream-protocol-version: v3.channel.k8s.io" in head.lower(), head
    conn = SpdyConnection(raw, server=False, name="v3 client")
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        with trio.fail_after(20):
            error = await conn.open_stream([("streamtype", "error")])
            stdout = await conn.open_stream([("streamtype", "stdout")])
            assert await stdout.receive_all() == b"v3\n"
            assert b"non-zero exit code" in (text := await error.receive_all()) and b"exit code 4" in text, text
        await raw.aclose()
        nursery.cancel_scope.cancel()

    # an unknown protocol version is a 403 naming both lists
    port = cluster.cloudstream.stream_port
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    tls = trio.SSLStream(tcp, client_ssl(cluster), server_hostname="127.0.0.1", https_compatible=True)
    await tls.send_all(
        f"POST /exec/default/spdy/main?command=true HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
        f"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v9.channel.k8s.io\r\n"
        f"X-Kubeedge-Node: {cluster.node_name}\r\n\r\n".encode()
    )
    body = b""
    with trio.fail_after(10):
        while data := await tls.receive_some():
            body += data
    assert body.startswith(b"HTTP/1.1 403") and b"v9.channel.k8s.io" in body and b"v4.channel.k8s.io" in body

    # the front keeps cloudstream's mTLS: without a client certificate from the client CA, no answer at all
    anonymous = ssl.create_default_context(cafile=cluster.cloudstream.paths["ca"])
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    tls = trio.SSLStream(tcp, anonymous, server_hostname="127.0.0.1", https_compatible=True)
    body = b""
    with trio.fail_after(10):
        try:
            await tls.send_all(
                b"POST /exec/default/spdy/main?command=true HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                b"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
            )
            while data := await tls.receive_some():
                body += data
        except trio.BrokenResourceError:
            pass
    assert body == b""


async def test_kubectl_exec_and_attach_over_spdy(cluster: Cluster) -> None:
    await cluster.create_pod(make_pod("spdy", cluster.node_name, [{"name": "main", "command": ["sleep", "3600"]}]))
    result = await spdy_kubectl(cluster, "exec", "-i", "spdy", "--", "cat", stdin=b"hello\nstdin round trip\n")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"hello\nstdin round trip\n"

    result = await spdy_kubectl(cluster, "exec", "spdy", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert result.returncode == 3, result.stderr.decode()
    assert result.stdout == b"out\n"
    assert b"err\n" in result.stderr and b"exit code 3" in result.stderr and b"out" not in result.stderr

    # more than the 64 KiB window, both ways (kubectl's spdystream does no flow control; we must not stall)
    payload = bytes(range(256)) * 1024
    result = await spdy_kubectl(cluster, "exec", "-i", "spdy", "--", "cat", stdin=payload)
    assert result.returncode == 0 and result.stdout == payload, result.stderr.decode()

    assert b"tick " in await kubectl_attach_to_a_ticker(cluster, NO_WEBSOCKETS)

    # straight to the API server: the token is checked and an unknown pod named, before any upgrade
    apiserver = cluster.cloud.module("apiserver")
    for token, pod, expect in (("wrong", "spdy", b"401"), (apiserver.token, "nosuch", b"404")):
        context = ssl.create_default_context(cafile=str(apiserver.ca_path))
        tcp = await trio.open_tcp_stream("127.0.0.1", apiserver.port)
        tls = trio.SSLStream(tcp, context, server_hostname="127.0.0.1", https_compatible=True)
        await tls.send_all(
            f"POST /api/v1/namespaces/default/pods/{pod}/exec?command=true&stdout=true HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n".encode()
        )
        body = b""
        with trio.fail_after(10):
            while data := await tls.receive_some():
                body += data
        assert body.startswith(b"HTTP/1.1 " + expect), body
        assert expect != b"404" or b'pods \\"nosuch\\" not found' in body, body

    # the node goes offline: a clear error naming it, at once, from both the API server and cloudstream
    assert cluster.edge is not None
    await cluster.edge.stop()
    with trio.fail_after(10):
        while cluster.node_name in cluster.cloudstream.tunnels.sessions:
            await cluster.cloudstream.tunnels.changed.wait()
    with trio.fail_after(10):
        result = await spdy_kubectl(cluster, "exec", "spdy", "--", "true")
    assert result.returncode != 0
    assert cluster.node_name.encode() in result.stderr and b"offline" in result.stderr, result.stderr
    code, body, _ = await upgrade(cluster, "/exec/default/spdy/main", [("command", "true")])
    assert code == 503 and cluster.node_name.encode() in body and b"offline" in body, body


async def test_kubectl_exec_it_over_spdy_in_a_terminal(cluster: Cluster) -> None:
    """`kubectl exec -it POD -- sh` over SPDY from a real terminal: the resize stream gives the shell the
    terminal's size, one output stream carries everything, and kubectl exits with the shell's status."""
    await cluster.create_pod(make_pod("shell", cluster.node_name, [{"name": "main", "command": ["sleep", "3600"]}]))
    code, seen = await kubectl_in_terminal(
        cluster,
        ["exec", "-it", "shell", "--", "sh"],
        b"stty size; tty; echo err >&2; exit 6\r",
        rows=29,
        cols=97,
        env=NO_WEBSOCKETS,
    )
    assert b"29 97" in seen, seen
    assert b"/dev/pts/" in seen and b"err" in seen, seen
    assert code == 6, (code, seen)

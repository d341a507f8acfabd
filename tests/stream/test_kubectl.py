"""The real kubectl against the embedded API server: logs and exec reach a busybox pod on the edge."""

from __future__ import annotations

import os
import re
from functools import partial
from pathlib import Path
from typing import Any

import trio

from .conftest import Cluster, kubectl_attach_to_a_ticker, kubectl_in_terminal, make_pod

SCRIPT = "for i in 1 2 3 4 5; do echo line $i; done; echo to-stderr >&2; sleep 3600"
# counts its attempts in an emptyDir (which outlives them): the first exits, the second stays up
FLAKY = (
    "n=$(( $(cat /work/n 2>/dev/null || echo 0) + 1 )); echo $n > /work/n; echo attempt $n; [ $n -ge 2 ] || exit 1; "
)
FLAKY += "sleep 3600"


async def test_kubectl_logs_and_exec(cluster: Cluster) -> None:
    pod = make_pod(
        "busy",
        cluster.node_name,
        [
            {"name": "main", "command": ["sh", "-c", SCRIPT]},
            {
                "name": "side",
                "command": ["sh", "-c", "echo side; sleep 3600"],
                "env": [{"name": "WHO", "value": "side"}],
            },
            {"name": "flaky", "command": ["sh", "-c", FLAKY], "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
        ],
    )
    pod["spec"]["volumes"] = [{"name": "work", "emptyDir": {}}]
    await cluster.create_pod(pod)

    # -f: the stream shows the lines as they are written (and kubectl is stopped once they are there)
    process: trio.Process | None = None
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            partial(
                trio.run_process,
                cluster.kubectl_command("logs", "-f", "busy", "-c", "main"),
                stdout=-1,
                stderr=-1,
                check=False,
                env=dict(os.environ, HOME=cluster.home),
            )
        )
        assert process is not None and process.stdout is not None
        seen = b""
        with trio.fail_after(15):
            while seen.count(b"\n") < 6:
                chunk = await process.stdout.receive_some()
                assert chunk, f"kubectl logs -f ended early: {seen!r}"
                seen += chunk
        process.terminate()
    assert seen == b"line 1\nline 2\nline 3\nline 4\nline 5\nto-stderr\n"

    result = await cluster.kubectl("logs", "busy", "-c", "main", "--tail", "2")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"line 5\nto-stderr\n"
    result = await cluster.kubectl("logs", "busy", "-c", "side")
    assert result.stdout == b"side\n", result.stderr.decode()
    result = await cluster.kubectl("logs", "busy", "-c", "side", "--timestamps")
    assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d) side\n", result.stdout), (
        result.stdout
    )
    # a container that never died has no previous attempt to show: say so
    result = await cluster.kubectl("logs", "busy", "-c", "side", "--previous")
    assert result.returncode != 0 and b"previous terminated container" in result.stderr, result.stderr

    # edged keeps the last dead attempt, as kubelet does: --previous shows it, without it the current one
    def restarted(statuses: list[dict[str, Any]]) -> bool:
        return any(s["name"] == "flaky" and s["restartCount"] >= 1 and "running" in s["state"] for s in statuses)

    await cluster.store.wait_status("default", "busy", restarted)
    result = await cluster.kubectl("logs", "busy", "-c", "flaky")
    assert result.returncode == 0 and result.stdout == b"attempt 2\n", result
    result = await cluster.kubectl("logs", "busy", "-c", "flaky", "--previous")
    assert result.returncode == 0 and result.stdout == b"attempt 1\n", result
    result = await cluster.kubectl("logs", "busy", "-c", "nosuch")
    assert result.returncode != 0 and b"nosuch" in result.stderr

    result = await cluster.kubectl("exec", "busy", "-c", "main", "--", "sh", "-c", "echo hi; echo err >&2; exit 3")
    assert result.returncode == 3, result.stderr.decode()
    assert result.stdout == b"hi\n"
    assert b"err\n" in result.stderr and b"exit code 3" in result.stderr

    result = await cluster.kubectl("exec", "-i", "busy", "-c", "main", "--", "cat", stdin=b"hello\nstdin round trip\n")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"hello\nstdin round trip\n"

    result = await cluster.kubectl("exec", "busy", "-c", "side", "--", "sh", "-c", "echo $WHO")
    assert result.returncode == 0 and result.stdout == b"side\n"

    # kubectl cp is tar over exec, both ways: a file goes in and comes back byte for byte
    payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
    local = Path(cluster.home) / "payload.bin"
    await trio.Path(local).write_bytes(payload)
    result = await cluster.kubectl("cp", str(local), "busy:/tmp/payload.bin", "-c", "main")
    assert result.returncode == 0, result.stderr.decode()
    result = await cluster.kubectl("exec", "busy", "-c", "main", "--", "wc", "-c", "/tmp/payload.bin")
    assert result.stdout.split()[0] == str(len(payload)).encode(), result.stdout
    back = Path(cluster.home) / "back.bin"
    result = await cluster.kubectl("cp", "busy:/tmp/payload.bin", str(back), "-c", "main")
    assert result.returncode == 0, result.stderr.decode()
    assert await trio.Path(back).read_bytes() == payload

    # the node goes offline: a clear error naming it, at once
    assert cluster.edge is not None
    await cluster.edge.stop()
    with trio.fail_after(10):
        while cluster.node_name in cluster.cloudstream.tunnels.sessions:
            await cluster.cloudstream.tunnels.changed.wait()
    result = await cluster.kubectl("logs", "busy", "-c", "main", timeout=10)
    assert result.returncode != 0
    assert cluster.node_name.encode() in result.stderr and b"offline" in result.stderr, result.stderr
    result = await cluster.kubectl("exec", "busy", "-c", "main", "--", "true", timeout=10)
    assert result.returncode != 0
    assert cluster.node_name.encode() in result.stderr and b"offline" in result.stderr, result.stderr


async def test_kubectl_attach(cluster: Cluster) -> None:
    assert b"tick " in await kubectl_attach_to_a_ticker(cluster)


async def test_kubectl_exec_it_in_a_terminal(cluster: Cluster) -> None:
    """`kubectl exec -it POD -- sh` from a real terminal: the shell gets a TTY of the terminal's size, and
    kubectl exits with the shell's status."""
    await cluster.create_pod(make_pod("shell", cluster.node_name, [{"name": "main", "command": ["sleep", "3600"]}]))
    code, seen = await kubectl_in_terminal(
        cluster, ["exec", "-it", "shell", "--", "sh"], b"stty size; tty; exit 5\r", rows=33, cols=111
    )
    assert b"33 111" in seen, seen
    assert b"/dev/pts/" in seen, seen
    assert code == 5, (code, seen)

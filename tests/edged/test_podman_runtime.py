"""The podman runtime against real podman: its API service started by the runtime itself."""

from __future__ import annotations

import shutil
import struct
import uuid
from pathlib import Path

import trio

from kubeedge.plugins.edged.images import BUSYBOX_IMAGE
from kubeedge.plugins.edged.podman import PodmanRuntime, demultiplex, docker_stats_usage
from kubeedge.plugins.edged.runtime import ContainerConfig, Mount

from .conftest import NODE_PREFIX, PodmanHost, socket_dir


def test_demultiplex_frames() -> None:
    frames = b"".join(
        struct.pack(">BxxxI", stream, len(text)) + text for stream, text in ((1, b"out\n"), (2, b"err\n"))
    )
    assert demultiplex(frames) == b"out\nerr\n"
    assert demultiplex(b"plain tty output") == b"plain tty output"


def test_docker_stats_usage() -> None:
    v2 = {
        "read": "2026-11-22T03:15:53.5Z",
        "cpu_stats": {"cpu_usage": {"total_usage": 1_090_636_898}},
        "memory_stats": {"usage": 10_000, "stats": {"inactive_file": 4_000, "anon": 5_000}},
        "networks": {"eth0": {"rx_bytes": 10, "tx_bytes": 20, "rx_errors": 1, "tx_errors": 0}, "eth1": {"rx_bytes": 5}},
    }
    usage = docker_stats_usage(v2)
    assert usage is not None
    assert (usage.timestamp, usage.cpu_usage_ns) == (1795317353.5, 1_090_636_898)
    assert (usage.memory_usage_bytes, usage.memory_working_set_bytes, usage.memory_rss_bytes) == (10_000, 6_000, 5_000)
    assert (usage.rx_bytes, usage.tx_bytes, usage.rx_errors, usage.tx_errors) == (15, 20, 1, 0)
    v1 = {
        "cpu_stats": {"cpu_usage": {"total_usage": 7}},
        "memory_stats": {"usage": 100, "stats": {"total_inactive_file": 30, "total_rss": 50}},
    }
    usage = docker_stats_usage(v1, now=12.0)
    assert usage is not None and usage.timestamp == 12.0  # no read time: the caller's clock
    assert (usage.memory_working_set_bytes, usage.memory_rss_bytes, usage.rx_bytes) == (70, 50, None)
    bare = docker_stats_usage({"cpu_stats": {"cpu_usage": {"total_usage": 7}}, "memory_stats": {"usage": 100}}, now=1)
    assert bare is not None and (bare.memory_working_set_bytes, bare.memory_rss_bytes) == (100, None)
    assert docker_stats_usage({"memory_stats": {"usage": 100}}) is None  # nothing about CPU: no sample


async def test_container_lifecycle(podman_host: PodmanHost, tmp_path: Path, nursery: trio.Nursery) -> None:
    sockets = socket_dir()
    runtime = PodmanRuntime(
        {"socket": str(sockets / "p.sock"), "startService": True, "containersConf": "auto"},
        data_dir=tmp_path,
        node_name="n",
    )
    node = f"{NODE_PREFIX}rt{uuid.uuid4().hex[:4]}"
    labels = {"io.kubeedge.node": node, "test": uuid.uuid4().hex}
    await nursery.start(runtime.run)
    try:
        assert (tmp_path / "podman" / "containers.conf").read_text().count("runc") == 1
        assert await runtime.image_present(BUSYBOX_IMAGE)
        assert await runtime.image_present("busybox")  # short names resolve to the local image
        assert not await runtime.image_present("localhost/no-such-image:1")
        assert any(BUSYBOX_IMAGE in image.tags for image in await runtime.list_images())
        assert (await runtime.version()).startswith("4.")

        shared = tmp_path / "shared"
        shared.mkdir()
        (shared / "in.txt").write_text("from the host")
        first = await runtime.create_container(
            ContainerConfig(
                name=f"{node}-once",
                image=BUSYBOX_IMAGE,
                command=["sh", "-c"],
                args=['echo "$GREETING from $(pwd)"; cat /data/in.txt; echo done > /data/out.txt; exit 3'],
                env={"GREETING": "hello"},
                working_dir="/tmp",
                labels=labels,
                mounts=[Mount(str(shared), "/data")],
            )
        )
        await runtime.start_container(first)
        assert await runtime.wait_container(first) == 3
        status = await runtime.inspect_container(first)
        assert status is not None
        assert (status.state, status.exit_code, status.reason) == ("exited", 3, "Error")
        assert status.labels["test"] == labels["test"] and status.started_at and status.finished_at
        assert await runtime.container_logs(first) == "hello from /tmp\nfrom the host"
        assert (shared / "out.txt").read_text() == "done\n"

        second = await runtime.create_container(
            ContainerConfig(
                name=f"{node}-long",
                image=BUSYBOX_IMAGE,
                command=["sh", "-c", "trap 'exit 0' TERM; sleep 60 & wait"],
                labels=labels,
            )
        )
        await runtime.start_container(second)
        usage = await runtime.container_stats(second)
        assert usage is not None and usage.cpu_usage_ns > 0 and usage.memory_working_set_bytes > 0, usage
        listed = {c.id: c for c in await runtime.list_containers({"test": labels["test"]})}
        assert set(listed) == {first, second}
        assert listed[second].state == "running" and listed[first].state == "exited"
        code, output = await runtime.exec_in_container(second, ["sh", "-c", "echo probe; exit 4"], timeout=5)
        assert (code, output) == (4, b"probe\n")
        with trio.fail_after(5):  # SIGTERM is trapped: stops well inside the grace period
            await runtime.stop_container(second, grace_seconds=10)
        stopped = await runtime.inspect_container(second)
        assert stopped is not None and (stopped.state, stopped.exit_code) == ("exited", 0)

        for container in (first, second):
            await runtime.remove_container(container)
            await runtime.remove_container(container)  # absent: fine
            assert await runtime.inspect_container(container) is None
        assert await runtime.container_stats(second) is None  # gone: nothing to report
        assert await runtime.list_containers({"test": labels["test"]}) == []
    finally:
        nursery.cancel_scope.cancel()
        shutil.rmtree(sockets, ignore_errors=True)

"""The podman runtime against real podman: its API service started by the runtime itself."""

from __future__ import annotations

import shutil
import struct
import uuid
from pathlib import Path

import trio

from kubeedge.plugins.edged.images import BUSYBOX_IMAGE
from kubeedge.plugins.edged.podman import PodmanRuntime, demultiplex
from kubeedge.plugins.edged.runtime import ContainerConfig, Mount

from .conftest import NODE_PREFIX, PodmanHost, socket_dir


def test_demultiplex_frames() -> None:
    frames = b"".join(
        struct.pack(">BxxxI", stream, len(text)) + text for stream, text in ((1, b"out\n"), (2, b"err\n"))
    )
    assert demultiplex(frames) == b"out\nerr\n"
    assert demultiplex(b"plain tty output") == b"plain tty output"


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
        assert await runtime.list_containers({"test": labels["test"]}) == []
    finally:
        nursery.cancel_scope.cancel()
        shutil.rmtree(sockets, ignore_errors=True)

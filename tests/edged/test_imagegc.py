"""Image GC: the threshold policy as a function, and one pass against a private podman storage."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from kubeedge.plugins.edged.imagegc import GCPolicy, collect_images, images_to_remove
from kubeedge.plugins.edged.images import BUSYBOX_IMAGE, build_busybox_image
from kubeedge.plugins.edged.podman import PodmanRuntime
from kubeedge.plugins.edged.runtime import ContainerConfig, ImageInfo

from .conftest import PodmanHost, socket_dir

GB = 1 << 30


def image(name: str, size: int, created: float = 0.0, containers: int = 0) -> ImageInfo:
    return ImageInfo(id=name, tags=[f"localhost/{name}:1"], size=size, created=created, containers=containers)


def test_policy_frees_least_recently_used_down_to_the_low_threshold() -> None:
    policy = GCPolicy()  # kubelet's 85 / 80
    images = [
        image("a", 3 * GB),
        image("b", 4 * GB),
        image("c", 2 * GB),
        image("in-use", 9 * GB),
        image("young", GB, 990),
    ]
    common = {"images": images, "in_use": {"in-use"}, "last_used": {"a": 50.0, "b": 10.0, "c": 60.0}, "now": 1000.0}
    assert images_to_remove(policy, capacity=100 * GB, used=84 * GB, **common) == []  # below 85 %: nothing
    chosen = images_to_remove(policy, capacity=100 * GB, used=86 * GB, **common)
    assert [i.id for i in chosen] == ["b", "a"]  # 6 GB to free: oldest use first, in-use and young ones kept
    everything = images_to_remove(policy, capacity=100 * GB, used=99 * GB, **common)
    assert [i.id for i in everything] == ["b", "a", "c"]  # falls short: never touches what is in use
    with pytest.raises(ValueError, match="low"):
        GCPolicy(high_percent=70, low_percent=80)


async def test_gc_pass_removes_unused_images_only(
    podman_host: PodmanHost, tmp_path: Path, nursery: trio.Nursery
) -> None:
    sockets = socket_dir()  # short: podman refuses a runroot longer than 50 characters
    storage = {"root": str(tmp_path / "root"), "runroot": str(sockets / "run"), "storageDriver": "vfs"}
    runtime = PodmanRuntime(
        {"socket": str(sockets / "p.sock"), "startService": True, "containersConf": "auto", **storage},
        data_dir=tmp_path,
        node_name="gc",
    )
    podman = runtime.podman_command()
    await trio.to_thread.run_sync(lambda: build_busybox_image(podman, env=runtime.env))
    await trio.to_thread.run_sync(lambda: build_busybox_image(podman, image="localhost/unused:1", env=runtime.env))
    await nursery.start(runtime.run)
    try:
        kept = await runtime.create_container(ContainerConfig(name="gc-user", image=BUSYBOX_IMAGE, command=["true"]))
        assert await runtime.image_present("localhost/unused:1")
        removed = await collect_images(runtime, GCPolicy(high_percent=0, low_percent=0, min_age=0))
        assert [i.tags for i in removed] == [["localhost/unused:1"]]
        assert not await runtime.image_present("localhost/unused:1")
        assert await runtime.image_present(BUSYBOX_IMAGE)
        await runtime.remove_container(kept)
    finally:
        nursery.cancel_scope.cancel()
        shutil.rmtree(sockets, ignore_errors=True)

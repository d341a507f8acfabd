"""Image garbage collection by disk thresholds, as kubelet's image GC manager does it.

When the image filesystem is used above ``highThresholdPercent``, the least recently used images that no
container uses (and that are older than ``minAge``) are removed until usage falls to ``lowThresholdPercent``.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import trio

from .runtime import ContainerRuntime, ImageInfo, RuntimeError_

__all__ = ["GCPolicy", "collect_images", "images_to_remove"]

log = logging.getLogger("kubeedge.edged.imagegc")


@dataclass(frozen=True)
class GCPolicy:
    high_percent: int = 85
    low_percent: int = 80
    min_age: float = 120.0

    def __post_init__(self) -> None:
        if not 0 <= self.low_percent <= self.high_percent <= 100:
            raise ValueError(
                f"image GC thresholds: need 0 <= low ({self.low_percent}) <= high ({self.high_percent}) <= 100"
            )


def images_to_remove(
    policy: GCPolicy,
    *,
    capacity: int,
    used: int,
    images: Iterable[ImageInfo],
    in_use: set[str],
    last_used: Mapping[str, float],
    now: float,
) -> list[ImageInfo]:
    """The images to delete, oldest use first, to bring ``used`` down to the low threshold (may fall short)."""
    if capacity <= 0 or used * 100 < policy.high_percent * capacity:
        return []
    to_free = used - capacity * policy.low_percent // 100
    candidates = [
        image
        for image in images
        if image.id not in in_use
        and image.containers == 0
        and now - last_used.get(image.id, image.created) >= policy.min_age
    ]
    candidates.sort(key=lambda image: (last_used.get(image.id, image.created), image.created))
    chosen: list[ImageInfo] = []
    freed = 0
    for image in candidates:
        if freed >= to_free:
            break
        chosen.append(image)
        freed += image.size
    return chosen


async def collect_images(
    runtime: ContainerRuntime, policy: GCPolicy, *, last_used_by_tag: Mapping[str, float] | None = None
) -> list[ImageInfo]:
    """One GC pass over the runtime's images: measure the image disk, pick with the policy, remove."""
    storage = await runtime.image_fs()
    usage = await trio.to_thread.run_sync(shutil.disk_usage, storage)
    images = await runtime.list_images()
    in_use = {c.image_id.removeprefix("sha256:") for c in await runtime.list_containers({})}
    last_used: dict[str, float] = {}
    for image in images:
        for tag in image.tags:
            if last_used_by_tag and tag in last_used_by_tag:
                last_used[image.id] = max(last_used.get(image.id, 0.0), last_used_by_tag[tag])
    doomed = images_to_remove(
        policy,
        capacity=usage.total,
        used=usage.used,
        images=images,
        in_use=in_use,
        last_used=last_used,
        now=time.time(),
    )
    removed = []
    for image in doomed:
        try:
            await runtime.remove_image(image.id)
        except RuntimeError_ as exc:
            log.warning("image GC could not remove %s: %s", image.id[:12], exc)
            continue
        removed.append(image)
        log.info("image GC removed %s (%s, %d bytes)", image.id[:12], ",".join(image.tags), image.size)
    return removed

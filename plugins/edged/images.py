"""Offline images: a busybox image built from the host's busybox-static, for nodes without a registry.

``podman import`` of a root filesystem holding ``/bin/busybox`` and one link per applet, with
``PATH=/bin`` and ``CMD ["sh"]``. Tests and benchmarks use it; so can a node that never reaches a registry.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Sequence

__all__ = ["BUSYBOX_IMAGE", "build_busybox_image", "busybox_rootfs_tar"]

BUSYBOX_IMAGE = "localhost/busybox:latest"


def busybox_rootfs_tar(busybox: str = "/bin/busybox") -> bytes:
    """A tar of ``/bin/busybox`` (must be static) plus a symlink per applet, and the usual empty dirs."""
    applets = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("bin", "tmp", "etc", "proc", "sys", "dev", "var", "root"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in applets:
            if applet == "busybox":  # the list names busybox itself: a link would replace the binary
                continue
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
    return buffer.getvalue()


def build_busybox_image(
    podman: Sequence[str] = ("podman",),
    *,
    image: str = BUSYBOX_IMAGE,
    env: dict[str, str] | None = None,
    force: bool = False,
    changes: Sequence[str] = ("ENV PATH=/bin", 'CMD ["sh"]'),
) -> bool:
    """Import the busybox image into podman's storage unless it is there; True when it was built."""
    env = dict(env if env is not None else os.environ)
    if not force:
        exists = subprocess.run([*podman, "image", "exists", image], env=env, capture_output=True)
        if exists.returncode == 0:
            return False
    busybox = shutil.which("busybox") or "/bin/busybox"
    result = subprocess.run(
        [*podman, "import", *(arg for change in changes for arg in ("--change", change)), "-", image],
        input=busybox_rootfs_tar(busybox),
        env=env,
        capture_output=True,
    )
    if result.returncode != 0:
        raise OSError(f"podman import of {image} failed: {result.stderr.decode(errors='replace').strip()}")
    return True

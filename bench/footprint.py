"""Peak RSS and time to "all modules started" for a profile, in a fresh `kubeedge run` process.

Prints one JSON object: profile, rss_mb, startup_s (plus modules, the number started).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def measure(profile: str, settle: float, extra: list[str], data_dir: str | None = None) -> dict[str, object]:
    if data_dir is not None:  # a joined edge needs its own data dir (its certificates live there)
        return _measure(profile, settle, extra, data_dir)
    with tempfile.TemporaryDirectory(prefix="kubeedge-footprint-") as scratch:
        return _measure(profile, settle, extra, scratch)


def _measure(profile: str, settle: float, extra: list[str], data_dir: str) -> dict[str, object]:
    kubeedge = str(Path(sys.executable).parent / "kubeedge")
    began = time.perf_counter()
    proc = subprocess.Popen(
        [kubeedge, "run", "--profile", profile, "--data-dir", data_dir, *extra],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            found = re.search(r"all (\d+) modules started", line)
            if found:
                startup = time.perf_counter() - began
                modules = int(found.group(1))
                break
        else:
            raise SystemExit(f"kubeedge run --profile {profile} exited with {proc.wait()} before it was ready")
        time.sleep(settle)  # let lazily started work (first connections, first polls) happen
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {"profile": profile, "rss_mb": round(rss, 1), "startup_s": round(startup, 3), "modules": modules}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="all-in-one", help="bundled profile name or path")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds to run after start-up before reading RSS")
    parser.add_argument("--set", action="append", default=[], help="profile override, as for kubeedge run")
    parser.add_argument("--data-dir", help="run on this data dir (default: a fresh temporary one)")
    options = parser.parse_args()
    extra = [arg for item in options.set for arg in ("--set", item)]
    print(json.dumps(measure(options.profile, options.settle, extra, options.data_dir)))

"""Real `kubeedge` processes for the journey and fault tests: start, watch their log, kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

BIN = Path(sys.executable).parent


class Proc:
    """A child process whose stderr (the log) is read line by line; ``wait_log`` waits for a line."""

    def __init__(self, process: trio.Process, name: str) -> None:
        self.process = process
        self.name = name
        self.lines: list[str] = []
        self.changed = trio.Event()

    async def _pump(self) -> None:
        assert self.process.stderr is not None
        buffer = b""
        async for chunk in self.process.stderr:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            self.lines.extend(line.decode(errors="replace") for line in lines)
            self.changed.set()
            self.changed = trio.Event()
        self.changed.set()

    async def wait_log(self, text: str, *, after: int = 0, timeout: float = 20) -> int:  # noqa: ASYNC109
        """Wait for a log line containing ``text`` (from line ``after`` on); return its index."""
        with trio.fail_after(timeout):
            while True:
                for index in range(after, len(self.lines)):
                    if text in self.lines[index]:
                        return index
                if self.process.returncode is not None:
                    raise AssertionError(
                        f"{self.name} exited ({self.process.returncode}):\n" + "\n".join(self.lines[-30:])
                    )
                await self.changed.wait()

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)

    @property
    def log(self) -> str:
        return "\n".join(self.lines)


@asynccontextmanager
async def kubeedge_run(profile: Path, name: str, *extra: str) -> AsyncIterator[Proc]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    async with trio.open_nursery() as nursery:
        process = await trio.lowlevel.open_process(
            [str(BIN / "kubeedge"), "--log-level", "info", "run", "--profile", str(profile), *extra],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        proc = Proc(process, name)
        nursery.start_soon(proc._pump)
        try:
            yield proc
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(10):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
            await process.wait()


async def keadm(*args: str, check: bool = True) -> Any:
    result = await trio.run_process(
        [str(BIN / "kubeedge"), "keadm", *args], capture_stdout=True, capture_stderr=True, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"keadm {args[0]} failed ({result.returncode}):\n{result.stdout.decode()}{result.stderr.decode()}"
        )
    return result


def cloud_ports(data_dir: Path) -> tuple[int, int]:
    info = json.loads((data_dir / "cloudhub.json").read_text())
    return info["port"], info["httpsPort"]


def read_rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read another process's SQLite database (WAL lets us read while it writes)."""
    import sqlite3

    if not db.exists():
        return []
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return connection.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []  # the table is not created yet
    finally:
        connection.close()


async def poll(predicate: Any, timeout: float = 20, every: float = 0.05) -> None:  # noqa: ASYNC109
    """Wait for a condition in another process's files: there is no event to await across processes."""
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(every)

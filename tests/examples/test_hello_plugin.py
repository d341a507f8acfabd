"""A third-party module distribution, pip-installed for real, found, started and talking to a built-in."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import yaml

from kubeedge import Kernel, Message, load_profile

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "kubeedge-plugin-hello"
BIN = Path(sys.executable).parent


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True, timeout=300)


def kubeedge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "kubeedge"), *args], capture_output=True, text=True, timeout=60, env=os.environ.copy()
    )


@pytest.fixture(scope="module")
def hello_installed() -> Iterator[None]:
    pip("install", "--no-build-isolation", "--no-deps", str(HELLO))
    try:
        yield
    finally:
        pip("uninstall", "-y", "kubeedge-plugin-hello")


def profile_file(tmp_path: Path) -> Path:
    path = tmp_path / "hello.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "role": "edge",
                "node": {"name": "edge-hello"},
                "modules": {"hello": {"greeting": "Grüezi"}, "health": {}},
            }
        )
    )
    return path


def test_installed_plugin_is_listed(hello_installed: None) -> None:
    plugins = json.loads(kubeedge("plugins", "--json").stdout)
    assert {"name": "hello", "kind": "module", "distribution": "kubeedge-plugin-hello", "version": "1.0.0"} in plugins


async def test_profile_naming_hello_starts_it_and_it_talks_to_a_builtin(hello_installed: None, tmp_path: Path) -> None:
    profile = load_profile(str(profile_file(tmp_path)), data_dir=tmp_path)
    kernel = Kernel.from_profile(profile)
    assert [m.name for m in kernel.modules] == ["health", "hello"]  # hello declares after=health
    async with trio.open_nursery() as nursery:
        await nursery.start(kernel.run)
        reply = await kernel.bus.send_sync("hello", Message(source="test", group="hello", operation="query"), 5)
        kernel.stop()
    assert reply.content["greeting"] == "Grüezi"
    assert reply.content["node"] == "edge-hello"
    assert reply.content["health"]["modules"] == {"health": "running", "hello": "running"}


def test_kubeedge_run_with_hello_as_a_user_does(hello_installed: None, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [str(BIN / "kubeedge"), "run", "--profile", str(profile_file(tmp_path)), "--data-dir", str(tmp_path)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "modules started" in line:
                break
        assert any("Grüezi from edge-hello; health says modules ['health', 'hello']" in line for line in lines), lines
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_uninstalled_plugin_fails_check_with_exit_2_naming_it(tmp_path: Path) -> None:
    # Runs after the module fixture has uninstalled the distribution again.
    subprocess.run(
        [sys.executable, "-m", "pip", "uninstall", "-y", "-q", "kubeedge-plugin-hello"],
        capture_output=True,
        timeout=120,
    )
    result = kubeedge("check", "--profile", str(profile_file(tmp_path)))
    assert result.returncode == 2
    assert "module plugin is not installed: 'hello'" in result.stderr
    assert "installed module plugins: " in result.stderr and "health" in result.stderr

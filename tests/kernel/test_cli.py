"""The command line, run as a user runs it: a real subprocess of the installed `kubeedge` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent


def kubeedge(
    *args: str, env: dict[str, str] | None = None, command: str = "kubeedge"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / command), *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def test_version() -> None:
    result = kubeedge("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("kubeedge 0.")


def test_plugins_json_lists_builtins_with_exactly_four_keys() -> None:
    result = kubeedge("plugins", "--json")
    assert result.returncode == 0, result.stderr
    plugins = json.loads(result.stdout)
    assert all(set(p) == {"name", "kind", "distribution", "version"} for p in plugins)
    health = next(p for p in plugins if p["name"] == "health")
    assert health == {"name": "health", "kind": "module", "distribution": "kubeedge", "version": "0.1.0"}
    table = kubeedge("plugins").stdout.splitlines()
    assert table[0].split() == ["NAME", "KIND", "DISTRIBUTION", "VERSION"]


def test_profiles_and_profile_show() -> None:
    assert kubeedge("profiles").stdout.split() == ["all-in-one", "cloud", "edge", "pi"]
    shown = kubeedge("profile", "show", "edge", "--set", "modules.eventbus.mqttMode=0", "--data-dir", "/tmp/x")
    assert shown.returncode == 0, shown.stderr
    data = yaml.safe_load(shown.stdout)
    assert data["modules"]["eventbus"]["mqttMode"] == 0
    assert data["dataDir"] == "/tmp/x"


def write_profile(tmp_path: Path, modules: dict[str, object]) -> str:
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump({"role": "edge", "node": {"name": "n1"}, "modules": modules}))
    return str(path)


def test_check_good_profile() -> None:
    result = kubeedge("check", "--profile", "all-in-one")
    assert result.returncode == 0, result.stderr
    assert "modules in start order: health, metrics" in result.stdout


def test_check_names_a_missing_module_and_what_is_installed(tmp_path: Path) -> None:
    result = kubeedge("check", "--profile", write_profile(tmp_path, {"health": {}, "warpdrive": {}}))
    assert result.returncode == 2
    assert "'warpdrive'" in result.stderr and "installed module plugins:" in result.stderr and "health" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_names_the_bad_config_key(tmp_path: Path) -> None:
    result = kubeedge("check", "--profile", write_profile(tmp_path, {"health": {"colour": "red"}}))
    assert result.returncode == 2
    assert "modules.health.colour: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_profile_is_one_line_and_exit_2() -> None:
    result = kubeedge("run", "--profile", "nope")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "kubeedge: error: unknown profile 'nope' (bundled profiles: all-in-one, cloud, edge, pi;"
        " or give a path to a YAML file)"
    ]


def test_broken_plugin_is_named_with_its_distribution_and_cause(tmp_path: Path) -> None:
    # A real installed distribution (a .dist-info on sys.path) whose module fails to import.
    site = tmp_path / "site"
    info = site / "kubeedge_broken-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kubeedge-broken\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text("[kubeedge.modules]\nbroken = kubeedge_broken_mod\n")
    (site / "kubeedge_broken_mod.py").write_text("import does_not_exist_anywhere\n")
    env = {"PYTHONPATH": str(site)}
    listed = json.loads(kubeedge("plugins", "--json", env=env).stdout)
    assert {"name": "broken", "kind": "module", "distribution": "kubeedge-broken", "version": "0.3"} in listed
    result = kubeedge("check", "--profile", write_profile(tmp_path, {"broken": {}}), env=env)
    assert result.returncode == 2
    assert "module plugin 'broken' (distribution kubeedge-broken, entry point kubeedge_broken_mod) failed to load" in (
        result.stderr
    )
    assert "No module named 'does_not_exist_anywhere'" in result.stderr
    # The rest of the command line keeps working with a broken plugin installed.
    assert kubeedge("check", "--profile", "all-in-one", env=env).returncode == 0


def test_run_starts_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [str(BIN / "kubeedge"), "run", "--profile", "all-in-one", "--data-dir", str(tmp_path)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if "modules started" in line:
                break
        else:
            raise AssertionError("the node never reported that its modules started")
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - began < 5
        assert "SIGTERM: stopping node all-in-one" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def test_cloudcore_and_edgecore_print_profiles() -> None:
    minimal = yaml.safe_load(kubeedge("--minconfig", command="cloudcore").stdout)
    assert minimal["role"] == "cloud"
    assert all(cfg == {} for cfg in minimal["modules"].values())
    full = yaml.safe_load(kubeedge("--defaultconfig", command="edgecore").stdout)
    assert full["role"] == "edge"
    assert "edgehub" in full["modules"]
    missing = kubeedge("--config", "/nonexistent/edgecore.yaml", command="edgecore")
    assert missing.returncode == 2
    assert "no such profile file" in missing.stderr

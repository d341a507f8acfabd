"""Meta-tests: every hookspec is documented and tested; every package is installed; entry points load."""

from __future__ import annotations

import inspect
import re
import tomllib
from pathlib import Path

import pytest

from kubeedge import hookspecs
from kubeedge.registry import installed

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted(name for name, fn in vars(hookspecs).items() if name.startswith("kubeedge_") and callable(fn))


def test_there_are_hookspecs() -> None:
    assert SPECS == sorted(
        [
            "kubeedge_cli_commands",
            "kubeedge_config_schema",
            "kubeedge_container_runtime",
            "kubeedge_mapper_driver",
            "kubeedge_module",
        ]
    )


@pytest.mark.parametrize("name", SPECS)
def test_hookspec_is_documented(name: str) -> None:
    spec = getattr(hookspecs, name)
    doc = inspect.getdoc(spec) or ""
    assert "Called" in doc, f"{name}: the docstring must say when it is called"
    for param in inspect.signature(spec).parameters:
        assert f":param {param}:" in doc, f"{name}: parameter {param} is not documented"
    if inspect.signature(spec).return_annotation not in ("None", None):
        assert ":return:" in doc, f"{name}: return value is not documented"


@pytest.mark.parametrize("name", SPECS)
def test_hookspec_has_a_test(name: str) -> None:
    tests = (ROOT / "tests" / "kernel" / "test_hooks.py").read_text()
    assert re.search(rf"^def test_hook_{name}\(", tests, re.M), f"no test_hook_{name} in tests/kernel/test_hooks.py"


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    roots = {v: k for k, v in config["package-dir"].items()}
    found = set()
    for folder, package in roots.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *relative.parts]))
    missing = sorted(found - listed)
    assert not missing, f"packages missing from [tool.setuptools] packages in pyproject.toml: {missing}"


def test_every_builtin_entry_point_names_an_importable_module() -> None:
    import importlib

    for info in installed():
        if info.distribution != "kubeedge":
            continue
        module = importlib.import_module(info.value)
        assert inspect.ismodule(module), f"{info.name}: entry point must name a module"

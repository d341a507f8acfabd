"""Profiles: which role a node plays, which modules and mappers it loads, and their config.

A profile is YAML, found by bundled name (``cloud``, ``edge``, ``pi``, ``all-in-one``) or by path. It is
validated completely before anything starts; an error names the key path and what was expected.
KubeEdge's own ``edgecore.yaml`` / ``cloudcore.yaml`` are accepted and translated (see :mod:`.compat`).
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Profile", "ProfileError", "bundled_profiles", "load_profile"]

ROLES = ("cloud", "edge", "all-in-one")
NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["role", "modules"],
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "description": {"type": "string"},
        "role": {"enum": list(ROLES)},
        "node": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": NODE_NAME.pattern},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "dataDir": {"type": "string", "minLength": 1},
        "logLevel": {"enum": ["debug", "info", "warning", "error"]},
        "shutdownTimeout": {"type": "number", "exclusiveMinimum": 0},
        "bus": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"buffer": {"type": "integer", "minimum": 1}},
        },
        "modules": {"type": "object", "additionalProperties": {"type": ["object", "null"]}},
        "mappers": {"type": "object", "additionalProperties": {"type": ["object", "null"]}},
    },
}


class ProfileError(ValueError):
    """A profile that cannot be used; ``path`` is the dotted key path at fault (empty for the file)."""

    def __init__(self, message: str, path: str = "", source: str = "") -> None:
        where = f"{path}: " if path else ""
        origin = f"{source}: " if source else ""
        super().__init__(f"{origin}{where}{message}")
        self.path = path
        self.source = source


@dataclass
class Profile:
    source: str
    role: str
    node_name: str
    data_dir: Path
    modules: dict[str, dict[str, Any]]
    mappers: dict[str, dict[str, Any]] = field(default_factory=dict)
    node_labels: dict[str, str] = field(default_factory=dict)
    log_level: str = "info"
    shutdown_timeout: float = 10.0
    bus_buffer: int = 1024
    raw: dict[str, Any] = field(default_factory=dict)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.raw, sort_keys=False)


def bundled_profiles() -> list[str]:
    root = resources.files("kubeedge.profiles")
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def read_profile_text(name_or_path: str) -> tuple[str, str]:
    """Return (source, YAML text) for a bundled profile name or a file path."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return str(path), path.read_text()
    if os.sep in name_or_path or name_or_path.endswith((".yaml", ".yml")):
        raise ProfileError(f"no such profile file: {name_or_path}")
    resource = resources.files("kubeedge.profiles").joinpath(f"{name_or_path}.yaml")
    if not resource.is_file():
        raise ProfileError(
            f"unknown profile {name_or_path!r} (bundled profiles: {', '.join(bundled_profiles())};"
            " or give a path to a YAML file)"
        )
    return f"bundled:{name_or_path}", resource.read_text()


def load_profile(
    name_or_path: str,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    data_dir: str | Path | None = None,
) -> Profile:
    """Read, translate, override and validate a profile. Raises :class:`ProfileError`."""
    source, text = read_profile_text(name_or_path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"not valid YAML: {exc}", source=source) from None
    if not isinstance(data, dict):
        raise ProfileError("a profile is a YAML mapping", source=source)
    from .compat import is_kubeedge_config, translate

    if is_kubeedge_config(data):
        data = translate(data)
    return build_profile(data, source=source, overrides=overrides, data_dir=data_dir)


def build_profile(
    data: dict[str, Any],
    *,
    source: str = "<profile>",
    overrides: list[str] | tuple[str, ...] = (),
    data_dir: str | Path | None = None,
) -> Profile:
    data = copy.deepcopy(data)
    for item in overrides:
        apply_override(data, item, source=source)
    validate(data, SCHEMA, source=source)
    node = data.get("node") or {}
    role = data["role"]
    node_name = node.get("name") or ("cloud" if role == "cloud" else "edge-node")
    chosen_dir = data_dir or data.get("dataDir") or default_data_dir(node_name)
    resolved_dir = Path(os.path.expandvars(str(chosen_dir))).expanduser()
    modules = {name: dict(cfg or {}) for name, cfg in (data.get("modules") or {}).items()}
    mappers = {name: dict(cfg or {}) for name, cfg in (data.get("mappers") or {}).items()}
    data["dataDir"] = str(resolved_dir)
    return Profile(
        source=source,
        role=role,
        node_name=node_name,
        node_labels=dict(node.get("labels") or {}),
        data_dir=resolved_dir,
        modules=modules,
        mappers=mappers,
        log_level=data.get("logLevel", "info"),
        shutdown_timeout=float(data.get("shutdownTimeout", 10.0)),
        bus_buffer=int((data.get("bus") or {}).get("buffer", 1024)),
        raw=data,
    )


def default_data_dir(node_name: str) -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "kubeedge" / node_name


def apply_override(data: dict[str, Any], item: str, *, source: str = "") -> None:
    """Apply ``key.path=value`` (value parsed as YAML, so ``0`` is a number and ``true`` a boolean)."""
    key, sep, raw_value = item.partition("=")
    if not sep or not key.strip():
        raise ProfileError(f"--set expects key.path=value, got {item!r}", source=source)
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else ""
    except yaml.YAMLError:
        value = raw_value
    parts = key.strip().split(".")
    target = data
    for depth, part in enumerate(parts[:-1]):
        child = target.get(part)
        if child is None:
            child = target[part] = {}
        if not isinstance(child, dict):
            raise ProfileError("is not a mapping, cannot set a key under it", ".".join(parts[: depth + 1]), source)
        target = child
    target[parts[-1]] = value


def validate(instance: Any, schema: dict[str, Any], *, source: str = "", prefix: str = "") -> None:
    """Validate with JSON Schema; raise :class:`ProfileError` naming the first bad key path."""
    from .schema import first_violation

    violation = first_violation(instance, schema)
    if violation is None:
        return
    path = ".".join([prefix, *violation.path] if prefix else violation.path)
    raise ProfileError(violation.message, path, source)

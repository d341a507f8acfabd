"""Profiles: bundled and file profiles, --set overrides, validation naming the key path, KubeEdge configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubeedge import ProfileError, load_profile
from kubeedge.profile import bundled_profiles


def test_bundled_profiles_are_the_four_roles() -> None:
    assert bundled_profiles() == ["all-in-one", "cloud", "edge", "pi"]
    for name in bundled_profiles():
        profile = load_profile(name)
        assert profile.modules, name
        assert profile.role in ("cloud", "edge", "all-in-one")


def test_set_overrides_one_value_by_key_path(tmp_path: Path) -> None:
    profile = load_profile(
        "edge",
        overrides=["modules.eventbus.mqttMode=0", "node.name=pi-7", "modules.edgehub.server=10.0.0.1:10000"],
        data_dir=tmp_path,
    )
    assert profile.modules["eventbus"]["mqttMode"] == 0  # parsed as YAML: a number, not "0"
    assert profile.node_name == "pi-7"
    assert profile.modules["edgehub"]["server"] == "10.0.0.1:10000"
    assert profile.data_dir == tmp_path


def write(tmp_path: Path, data: object) -> str:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        ({"role": "moon", "modules": {}}, "role", "expected one of 'cloud', 'edge', 'all-in-one'"),
        ({"role": "edge", "modules": {}, "nodes": {}}, "nodes", "unknown key"),
        ({"role": "edge", "modules": {"a": 5}}, "modules.a", "expected object or null, got int 5"),
        ({"role": "edge", "modules": {}, "node": {"name": "Bad_Name"}}, "node.name", "does not match"),
        ({"role": "edge"}, "", "'modules' is a required property"),
    ],
)
def test_bad_profiles_name_the_key_path(tmp_path: Path, data: object, path: str, fragment: str) -> None:
    with pytest.raises(ProfileError, match=fragment) as info:
        load_profile(write(tmp_path, data))
    assert info.value.path == path


def test_unknown_profile_lists_the_bundled_ones() -> None:
    with pytest.raises(ProfileError, match="unknown profile 'nope'.*all-in-one, cloud, edge, pi"):
        load_profile("nope")


def test_missing_file_and_bad_yaml_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="no such profile file"):
        load_profile(str(tmp_path / "absent.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("role: [edge\n")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(str(bad))
    with pytest.raises(ProfileError, match="--set expects key.path=value"):
        load_profile("edge", overrides=["nonsense"])
    with pytest.raises(ProfileError, match="is not a mapping") as info:
        load_profile("edge", overrides=["role.x=1"])
    assert info.value.path == "role"


def test_kubeedge_edgecore_yaml_is_translated(tmp_path: Path) -> None:
    edgecore = {
        "apiVersion": "edgecore.config.kubeedge.io/v1alpha2",
        "kind": "EdgeCore",
        "database": {"dataSource": str(tmp_path / "edgecore.db")},
        "modules": {
            "edgeHub": {"enable": True, "heartbeat": 15, "token": "abc", "websocket": {"server": "1.2.3.4:10000"}},
            "eventBus": {"enable": True, "mqttMode": 0},
            "deviceTwin": {"enable": True},
            "edged": {"enable": False, "hostnameOverride": "KE-Edge-1"},
            "serviceBus": {"enable": False},
            "metaManager": {"enable": False, "metaServer": {"enable": True, "server": "127.0.0.1:10551"}},
        },
    }
    profile = load_profile(write(tmp_path, edgecore))
    assert profile.role == "edge"
    assert profile.node_name == "ke-edge-1"
    assert list(profile.modules) == ["edgehub", "eventbus", "twin", "metaserver"]
    assert profile.modules["metaserver"] == {"address": "127.0.0.1", "port": 10551}
    assert profile.modules["edgehub"] == {"heartbeat": 15, "server": "1.2.3.4:10000", "token": "abc"}
    assert profile.modules["eventbus"] == {"mqttMode": 0}
    assert profile.data_dir == tmp_path


def test_kubeedge_cloudcore_yaml_without_a_cluster_uses_the_embedded_api(tmp_path: Path) -> None:
    cloudcore = {
        "apiVersion": "cloudcore.config.kubeedge.io/v1alpha1",
        "kind": "CloudCore",
        "modules": {
            "cloudHub": {"enable": True, "nodeLimit": 1000, "websocket": {"port": 10000}, "https": {"port": 10002}},
            "edgeController": {"enable": True},
            "router": {"enable": False},
        },
    }
    profile = load_profile(write(tmp_path, cloudcore))
    assert profile.role == "cloud"
    assert list(profile.modules) == ["apiserver", "cloudhub", "edgecontroller"]
    assert profile.modules["cloudhub"] == {"nodeLimit": 1000, "port": 10000, "httpsPort": 10002}

"""edged's pure parts: spec -> container config, environment, volumes, phase, probes, times; the hooks."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from kubeedge import Kernel, KernelError, Message, Plugins, hookimpl
from kubeedge.plugins import edged
from kubeedge.plugins.edged import pods
from kubeedge.plugins.edged.podman import PodmanRuntime
from kubeedge.plugins.edged.probes import ProbeSpec, resolve_port
from kubeedge.plugins.edged.runtime import LABEL_CONTAINER, LABEL_HASH, LABEL_NODE, LABEL_UID, ContainerConfig
from kubeedge.plugins.edged.worker import _seconds, _short_time
from kubeedge.profile import build_profile

from .conftest import NODE_PREFIX, PodmanHost, Store, edged_config, make_pod


def objects() -> pods.Objects:
    return pods.Objects(
        configmaps={"cm": {"data": {"a": "1", "b": "2"}, "binaryData": {"bin": base64.b64encode(b"\x00x").decode()}}},
        secrets={"sec": {"data": {"pw": base64.b64encode(b"hunter2").decode()}}},
    )


def test_expand_follows_kubernetes() -> None:
    env = {"A": "x", "B": "y"}
    assert pods.expand("$(A)-$(B)-$(C)-$$(A)-$$", env) == "x-y-$(C)-$(A)-$"


def test_environment_sources_and_errors() -> None:
    pod = make_pod("p", [])
    pod["metadata"]["labels"] = {"app": "demo"}
    container = {
        "name": "c",
        "envFrom": [
            {"configMapRef": {"name": "cm"}},
            {"secretRef": {"name": "sec"}, "prefix": "S_"},
            {"configMapRef": {"name": "absent", "optional": True}},
        ],
        "env": [
            {"name": "a", "value": "override $(b)"},
            {"name": "LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "nope", "optional": True}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
        ],
    }
    env = pods.resolve_env(pod, container, objects(), node_name="n", host_ip="10.1.1.1")
    assert env["a"] == "override 2" and env["b"] == "2" and env["S_pw"] == "hunter2"
    assert env["LABEL"] == "demo" and env["IP"] == "10.1.1.1" and "OPT" not in env and int(env["MEM"]) > 0
    with pytest.raises(pods.ConfigError, match='configmap "gone" not found'):
        pods.resolve_env(pod, {"envFrom": [{"configMapRef": {"name": "gone"}}]}, objects(), node_name="n")
    with pytest.raises(pods.ConfigError, match='couldn\'t find key z in secret "sec"'):
        pods.resolve_env(
            pod,
            {"env": [{"name": "Z", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "z"}}}]},
            objects(),
            node_name="n",
        )


def test_resource_quantities() -> None:
    assert pods.parse_quantity("128Mi") == 128 << 20 and pods.parse_quantity("500m") == 0.5
    assert pods.parse_quantity("2") == 2 and pods.parse_quantity("1e3") == 1000 and pods.parse_quantity("1G") == 1e9
    with pytest.raises(pods.ConfigError, match="not a resource quantity"):
        pods.parse_quantity("lots")
    container = {"resources": {"limits": {"memory": "64Mi", "cpu": "1500m"}, "requests": {"cpu": "250m"}}}
    assert pods.resources(container) == (64 << 20, 1.5, 256)
    assert pods.resources({}) == (0, 0.0, 0)
    limit = {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}
    env = pods.resolve_env(
        make_pod("p", []), {**container, "env": [{"name": "M", "valueFrom": limit}]}, pods.Objects(), node_name="n"
    )
    assert env["M"] == "64"


def test_references_and_container_config(tmp_path: Path) -> None:
    pod = make_pod(
        "p",
        [
            {
                "name": "c",
                "image": "busybox",
                "command": ["sh"],
                "args": ["-c", "echo $(a)"],
                "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "a"}}}],
                "envFrom": [{"secretRef": {"name": "sec"}}],
                "ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}],
                "volumeMounts": [{"name": "v", "mountPath": "/v", "readOnly": True, "subPath": "sub"}],
                "securityContext": {"runAsUser": 1000, "privileged": True},
            }
        ],
        volumes=[{"name": "v", "configMap": {"name": "cm2"}}],
    )
    assert pods.references(pod) == ({"cm", "cm2"}, {"sec"})
    config = pods.container_config(
        pod,
        pod["spec"]["containers"][0],
        objects=objects(),
        volumes={"v": str(tmp_path)},
        network="none",
        node_name="n",
        host_ip="",
        restart_count=2,
    )
    assert config.command == ["sh"] and config.args == ["-c", "echo $(a)"]  # `a` is not in this container's env
    assert config.env == {"pw": "hunter2", "X": "1"}
    assert config.labels[LABEL_UID] == pod["metadata"]["uid"] and config.labels[LABEL_CONTAINER] == "c"
    assert config.labels[LABEL_NODE] == "n" and len(config.labels[LABEL_HASH]) == 16
    assert config.name.startswith("k8s_c_p_default_") and config.name.endswith("_2")
    assert config.ports[0].host_port == 8080 and config.ports[0].protocol == "udp"
    assert config.mounts[0].host_path == str(tmp_path / "sub") and config.mounts[0].read_only
    assert config.user == "1000" and config.privileged
    assert pods.container_hash({"a": 1, "b": 2}) == pods.container_hash({"b": 2, "a": 1})


def test_volumes_on_disk(tmp_path: Path) -> None:
    pod = make_pod(
        "p",
        [],
        volumes=[
            {"name": "cfg", "configMap": {"name": "cm", "items": [{"key": "a", "path": "dir/a.txt", "mode": 0o600}]}},
            {"name": "all", "configMap": {"name": "cm", "defaultMode": 0o640}},
            {"name": "sec", "secret": {"secretName": "sec"}},
            {"name": "opt", "secret": {"secretName": "absent", "optional": True}},
            {"name": "host", "hostPath": {"path": str(tmp_path / "h" / "f"), "type": "FileOrCreate"}},
            {"name": "tmp", "emptyDir": {"medium": "Memory"}},
        ],
    )
    paths = pods.materialise_volumes(pod, tmp_path / "pods", objects())
    cfg = Path(paths["cfg"])
    assert (cfg / "dir" / "a.txt").read_text() == "1" and (cfg / "dir" / "a.txt").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in Path(paths["all"]).iterdir()) == ["a", "b", "bin"]
    assert (Path(paths["all"]) / "bin").read_bytes() == b"\x00x"
    assert (Path(paths["all"]) / "b").stat().st_mode & 0o777 == 0o640
    assert (Path(paths["sec"]) / "pw").read_text() == "hunter2"
    assert list(Path(paths["opt"]).iterdir()) == [] and Path(paths["host"]).is_file() and Path(paths["tmp"]).is_dir()
    with pytest.raises(pods.ConfigError, match="unsupported type"):
        pods.materialise_volumes(make_pod("q", [], volumes=[{"name": "x", "nfs": {}}]), tmp_path, objects())
    with pytest.raises(pods.ConfigError, match="is not a directory"):
        pods.materialise_volumes(
            make_pod(
                "q", [], volumes=[{"name": "x", "hostPath": {"path": str(tmp_path / "missing"), "type": "Directory"}}]
            ),
            tmp_path,
            objects(),
        )


def test_phase_grace_and_restart_rules() -> None:
    run: dict[str, Any] = {"state": {"running": {}}}
    ok = {"state": {"terminated": {"exitCode": 0}}}
    bad = {"state": {"terminated": {"exitCode": 1}}}
    backoff = {"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 1}}}
    creating = {"state": {"waiting": {"reason": "ContainerCreating"}}}
    assert pods.pod_phase("Always", [run, creating]) == "Pending"
    assert pods.pod_phase("Always", [run, backoff]) == "Running"
    assert pods.pod_phase("Never", [ok, ok]) == "Succeeded"
    assert pods.pod_phase("Never", [ok, bad]) == "Failed"
    assert pods.pod_phase("OnFailure", [ok, bad]) == "Running"
    assert pods.pod_phase("Always", [ok]) == "Running"
    assert pods.pod_phase("Always", []) == "Pending"
    assert [pods.should_restart(p, 0) for p in ("Always", "OnFailure", "Never")] == [True, False, False]
    pod = make_pod("p", [], terminationGracePeriodSeconds=7)
    assert pods.grace_period(pod) == 7 and pods.grace_period(pod, 2) == 2
    pod["metadata"]["deletionGracePeriodSeconds"] = 3
    assert pods.grace_period(pod) == 3
    del pod["spec"]["terminationGracePeriodSeconds"], pod["metadata"]["deletionGracePeriodSeconds"]
    assert pods.grace_period(pod) == 30


def test_probe_specs_and_times() -> None:
    spec = ProbeSpec.parse({"httpGet": {"port": "web"}, "periodSeconds": 5, "failureThreshold": 2})
    assert (spec.kind, spec.period, spec.failure_threshold, spec.timeout) == ("httpGet", 5.0, 2, 1.0)
    assert resolve_port("web", {"ports": [{"name": "web", "containerPort": 81}]}) == 81
    assert resolve_port("82", {}) == 82
    with pytest.raises(ValueError, match="named container port"):
        resolve_port("nope", {})
    with pytest.raises(ValueError, match="no handler"):
        ProbeSpec.parse({"periodSeconds": 1})
    assert _short_time("2026-11-22T01:16:26.087109682Z") == "2026-11-22T01:16:26Z"
    assert _short_time("2026-11-22T02:16:26.5+01:00") == "2026-11-22T01:16:26Z"
    assert _seconds("") is None and _seconds("garbage") is None


def test_hooks_offer_podman_and_a_schema() -> None:
    runtimes = edged.kubeedge_container_runtime()
    assert runtimes["podman"] == "kubeedge.plugins.edged.podman:PodmanRuntime"  # imported only when chosen
    assert runtimes["cri"] == "kubeedge.plugins.edged.cri:CRIRuntime"
    schema = edged.kubeedge_config_schema()
    assert schema["properties"]["podman"]["properties"]["startService"]["type"] == "boolean"


async def test_unknown_runtime_fails_loudly(tmp_path: Path) -> None:
    config = {"runtime": "nonesuch"}
    profile = build_profile({"role": "edge", "modules": {"edged": config}}, data_dir=tmp_path)
    plugins = Plugins()
    plugins.load("module", ["edged"])
    kernel = Kernel(profile, plugins, [Store(), plugins.module("edged", config, profile)])
    with pytest.raises(KernelError, match="container runtime 'nonesuch' is not provided by any loaded plugin"):
        await kernel.run(handle_signals=False)


async def test_messages_edged_does_not_understand_are_ignored(edge: object) -> None:
    from .conftest import Edge

    assert isinstance(edge, Edge)
    store = edge.store
    assert store.ctx is not None
    for message in (
        Message(
            source="websocket", group="meta", operation="connect", resource="node/connection", content="cloud_connected"
        ),
        Message(source="x", group="resource", operation="insert", resource="default/pod/broken", content="not json"),
        Message(source="x", group="resource", operation="frobnicate", resource="default/pod/p", content={}),
        Message(source="x", group="resource", operation="insert", resource="weird", content=None),
        Message(
            source="x",
            group="resource",
            operation="insert",
            resource="default/pod/nouid",
            content={"metadata": {"name": "nouid"}},
        ),
    ):
        await store.ctx.send("edged", message)
    pod = make_pod("after", [{"name": "main", "command": ["sleep", "60"]}])
    await store.put(pod)
    await store.wait_status("default/after", lambda s: s.get("phase") == "Running")
    assert edge.edged.manager.cloud_connected


class TaggingPodman(PodmanRuntime):
    """A third party's runtime: podman that also labels every container with its vendor."""

    name = "acme"

    async def create_container(self, config: ContainerConfig) -> str:
        config.labels["com.acme.runtime"] = "yes"
        return await super().create_container(config)


class AcmePlugin:
    @hookimpl
    def kubeedge_container_runtime(self) -> dict[str, Any]:
        return {"acme": TaggingPodman}


async def test_a_third_party_runtime_is_one_more_plugin(
    podman_host: PodmanHost, tmp_path: Path, short_dir: Path
) -> None:
    sockets = short_dir
    config = edged_config(sockets, runtime="acme", acme={"socket": str(sockets / "p.sock")})
    node = f"{NODE_PREFIX}{uuid.uuid4().hex[:6]}"
    profile = build_profile({"role": "edge", "node": {"name": node}, "modules": {"edged": config}}, data_dir=tmp_path)
    plugins = Plugins()
    plugins.load("module", ["edged"])
    plugins.register("module", "acme", AcmePlugin())
    store = Store()
    kernel = Kernel(profile, plugins, [store, plugins.module("edged", config, profile)])
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: kernel.run(handle_signals=False, task_status=task_status))
            await store.put(make_pod("acme", [{"name": "main", "command": ["sleep", "60"]}]))
            await store.wait_status("default/acme", lambda s: s.get("phase") == "Running")
            labels = podman_host.containers(node, infra=False)[0]["Labels"]
            assert labels["com.acme.runtime"] == "yes" and labels["io.kubernetes.pod.name"] == "acme"
            kernel.stop()
    finally:
        podman_host.remove_node(node)


def test_profile_section_is_validated(tmp_path: Path) -> None:
    from kubeedge.kernel import resolve
    from kubeedge.profile import ProfileError

    good = edged_config(tmp_path, runtime="cri", cri={"startService": True})
    profile = build_profile({"role": "edge", "modules": {"edged": good}}, data_dir=tmp_path)
    _, modules = resolve(profile)
    assert [m.name for m in modules] == ["edged"]
    bad = build_profile(
        {"role": "edge", "modules": {"edged": {"backoff": {"initialSeconds": "soon"}}}}, data_dir=tmp_path
    )
    with pytest.raises(ProfileError, match="modules.edged.backoff.initialSeconds"):
        resolve(bad)

"""edged's pod lifecycle against real podman, driven over the bus by a test metamanager."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from kubeedge.plugins.edged.runtime import LABEL_POD, LABEL_RESTART_COUNT

from .conftest import Edge, make_pod


async def wait_until(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:  # noqa: ASYNC109
    """For state outside the process (files written by containers): look again every 50 ms."""
    with trio.fail_after(timeout):
        while not (value := predicate()):  # noqa: ASYNC110 - no event exists for files a container writes
            await trio.sleep(0.05)
        return value


def running(status: dict[str, Any]) -> bool:
    return status.get("phase") == "Running" and all(
        "running" in c.get("state", {}) for c in status.get("containerStatuses", [])
    )


def ready(status: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))


def container(status: dict[str, Any], name: str = "main") -> dict[str, Any]:
    return next(c for c in status.get("containerStatuses", []) if c["name"] == name)


async def test_pod_with_env_and_every_volume_type(edge: Edge, tmp_path: Path) -> None:
    store = edge.store
    host_dir = tmp_path / "host"
    settings = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "default"},
        "data": {"mode": "fast", "level": "3", "app.conf": "colour=blue\n"},
    }
    token = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "token", "namespace": "default"},
        "data": {"password": base64.b64encode(b"s3cret").decode()},
    }
    store.objects["default/configmap/settings"] = settings
    store.objects["default/secret/token"] = token
    script = (
        "env | sort > /out/env.txt; pwd > /out/pwd.txt; cat /config/conf /secret/password > /out/files.txt;"
        " echo scratch > /scratch/x; ls /scratch > /out/scratch.txt; echo $0 $1 > /out/args.txt; sleep 60"
    )
    pod = make_pod(
        "web",
        [
            {
                "name": "main",
                "command": ["sh", "-c", script],
                "args": ["$(MODE)-arg", "$$literal"],
                "workingDir": "/tmp",
                "env": [
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "token", "key": "password"}}},
                    {"name": "COMBINED", "value": "$(MODE)/$(POD_NAME)"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                ],
                "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
                "ports": [{"containerPort": 8080, "hostPort": 8080}],
                "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
                "volumeMounts": [
                    {"name": "out", "mountPath": "/out"},
                    {"name": "config", "mountPath": "/config", "readOnly": True},
                    {"name": "secret", "mountPath": "/secret", "readOnly": True},
                    {"name": "scratch", "mountPath": "/scratch"},
                ],
            }
        ],
        volumes=[
            {"name": "out", "hostPath": {"path": str(host_dir), "type": "DirectoryOrCreate"}},
            {"name": "config", "configMap": {"name": "settings", "items": [{"key": "app.conf", "path": "conf"}]}},
            {"name": "secret", "secret": {"secretName": "token"}},
            {"name": "scratch", "emptyDir": {}},
        ],
    )
    await store.put(pod)
    status = await store.wait_status("default/web", running)
    assert status["startTime"] and status["hostIP"] == "127.0.0.1"
    assert container(status)["restartCount"] == 0 and container(status)["containerID"].startswith("podman://")
    assert ready(status)

    await wait_until(lambda: (host_dir / "args.txt").exists())
    env = dict(line.split("=", 1) for line in (host_dir / "env.txt").read_text().splitlines() if "=" in line)
    assert (
        env["MODE"] == "fast" and env["PASSWORD"] == "s3cret" and env["COMBINED"] == "fast/$(POD_NAME)"
    )  # only earlier names expand
    assert env["POD_NAME"] == "web" and env["NODE"] == edge.name
    assert env["CFG_level"] == "3" and env["CFG_mode"] == "fast"
    assert (host_dir / "pwd.txt").read_text() == "/tmp\n"
    assert (host_dir / "files.txt").read_text() == "colour=blue\ns3cret"
    assert (host_dir / "scratch.txt").read_text() == "x\n"
    assert (host_dir / "args.txt").read_text() == "fast-arg $literal\n"
    inspected = await edge.edged.runtime.client.get(f"/containers/{container(status)['containerID'][9:]}/json")
    host_config = inspected.json()["HostConfig"]
    assert host_config["Memory"] == 64 << 20 and host_config["NanoCpus"] == 500_000_000
    uid = pod["metadata"]["uid"]
    volumes = edge.data_dir / "edged" / "pods" / uid / "volumes"
    assert (volumes / "empty-dir" / "scratch" / "x").read_text() == "scratch\n"

    # a configmap update reaches the running pod's volume, as kubelet's configMap volumes do
    settings_v2 = json.loads(json.dumps(settings))
    settings_v2["data"]["app.conf"] = "colour=green\n"
    await store.put(settings_v2, operation="update")
    await wait_until(lambda: (volumes / "configmap" / "config" / "conf").read_text() == "colour=green\n")

    await store.delete(pod)
    await wait_until(lambda: not (edge.data_dir / "edged" / "pods" / uid).exists())
    assert host_dir.is_dir()  # hostPath data outlives the pod


async def test_missing_configmap_waits_then_starts(edge: Edge) -> None:
    store = edge.store
    pod = make_pod(
        "needs-config",
        [
            {
                "name": "main",
                "command": ["sleep", "60"],
                "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "later", "key": "x"}}}],
            }
        ],
    )
    await store.put(pod)
    status = await store.wait_status(
        "default/needs-config",
        lambda s: container(s)["state"].get("waiting", {}).get("reason") == "CreateContainerConfigError",
    )
    assert status["phase"] == "Pending"
    await store.put({"kind": "ConfigMap", "metadata": {"name": "later", "namespace": "default"}, "data": {"x": "1"}})
    await store.wait_status("default/needs-config", running)


async def test_crash_loop_backs_off_and_restart_policies(edge: Edge) -> None:
    store = edge.store
    times: dict[int, float] = {}

    def restarts(status: dict[str, Any]) -> bool:
        count = container(status)["restartCount"] if status.get("containerStatuses") else 0
        times.setdefault(count, trio.current_time())
        return count >= 3

    await store.put(make_pod("crash", [{"name": "main", "command": ["sh", "-c", "echo boom; exit 1"]}]))
    await store.put(make_pod("done", [{"name": "main", "command": ["true"]}], restartPolicy="OnFailure"))
    await store.put(make_pod("fail", [{"name": "main", "command": ["sh", "-c", "exit 2"]}], restartPolicy="Never"))
    await store.put(make_pod("retry", [{"name": "main", "command": ["sh", "-c", "exit 5"]}], restartPolicy="OnFailure"))
    await store.put(make_pod("missing", [{"name": "main", "command": ["/no/such/program"]}]))

    await store.wait_status("default/crash", restarts, timeout=30)
    # backoff 0.5 s doubling to 2 s: the third restart waits about twice as long as the second
    assert times[3] - times[2] >= 0.9 and times[2] - times[1] >= 0.4
    # the current attempt and the one dead attempt before it are kept, never more
    kept = await edge.edged.runtime.list_containers({LABEL_POD: "crash"})
    counts = sorted(int(c.labels[LABEL_RESTART_COUNT]) for c in kept)
    assert len(counts) == 2 and counts[1] == counts[0] + 1 and counts[0] >= 2, counts
    history = [s["Status"] for s in store.statuses["default/crash"]]
    waiting = [container(s)["state"]["waiting"] for s in history if "waiting" in container(s)["state"]]
    assert any(w["reason"] == "CrashLoopBackOff" for w in waiting)
    last = container(store.status("default/crash"))["lastState"]["terminated"]
    assert last["exitCode"] == 1 and last["reason"] == "Error"
    assert all(s["phase"] in ("Pending", "Running") for s in history)

    done = await store.wait_status("default/done", lambda s: s["phase"] == "Succeeded")
    assert container(done)["restartCount"] == 0
    assert container(done)["state"]["terminated"]["reason"] == "Completed"
    fail = await store.wait_status("default/fail", lambda s: s["phase"] == "Failed")
    assert container(fail)["state"]["terminated"]["exitCode"] == 2 and container(fail)["restartCount"] == 0
    retry = await store.wait_status("default/retry", lambda s: container(s)["restartCount"] >= 1)
    assert retry["phase"] == "Running"
    missing = await store.wait_status("default/missing", lambda s: container(s)["restartCount"] >= 1)
    start_error = container(missing)["lastState"]["terminated"]
    assert (start_error["exitCode"], start_error["reason"]) == (128, "StartError")
    assert "/no/such/program" in start_error["message"]


async def test_liveness_restarts_and_readiness_gates(edge: Edge) -> None:
    store = edge.store
    probe = {"periodSeconds": 0.3, "failureThreshold": 2, "timeoutSeconds": 2}
    pod = make_pod(
        "probed",
        [
            {
                "name": "main",
                # healthy for a moment, then not; ready only after the marker appears
                "command": ["sh", "-c", "touch /alive; sleep 1; touch /ready; sleep 1; rm /alive; sleep 60"],
                "livenessProbe": {"exec": {"command": ["test", "-f", "/alive"]}, **probe},
                "readinessProbe": {"exec": {"command": ["test", "-f", "/ready"]}, **probe, "failureThreshold": 1},
            }
        ],
    )
    await store.put(pod)
    first = await store.wait_status("default/probed", running)
    assert not ready(first) and not container(first)["ready"]
    await store.wait_status("default/probed", ready)
    restarted = await store.wait_status("default/probed", lambda s: container(s)["restartCount"] >= 1, timeout=20)
    assert restarted["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 137
    assert not ready(restarted)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_http_and_tcp_probes_on_host_network(edge: Edge) -> None:
    store = edge.store
    port = free_port()
    pod = make_pod(
        "httpd",
        [
            {
                "name": "main",
                "command": [
                    "sh",
                    "-c",
                    f"mkdir -p /www && echo ok > /www/index.html && httpd -f -p 127.0.0.1:{port} -h /www",
                ],
                "ports": [{"name": "http", "containerPort": port, "hostPort": port}],
                "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 0.3},
                "livenessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 0.3, "failureThreshold": 1},
            }
        ],
        hostNetwork=True,
    )
    await store.put(pod)
    status = await store.wait_status("default/httpd", lambda s: running(s) and ready(s))
    assert status["podIP"] == "127.0.0.1"
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.aclose()
    assert container(status)["restartCount"] == 0


async def test_delete_honours_the_grace_period(edge: Edge) -> None:
    store = edge.store
    polite = make_pod(
        "polite",
        [{"name": "main", "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 60 & wait"]}],
        terminationGracePeriodSeconds=30,
    )
    stubborn = make_pod("stubborn", [{"name": "main", "command": ["sleep", "60"]}], terminationGracePeriodSeconds=1)
    await store.put(polite)
    await store.put(stubborn)
    await store.wait_status("default/polite", running)
    await store.wait_status("default/stubborn", running)
    runtime = edge.edged.runtime

    workers = {
        pod["metadata"]["name"]: edge.edged.manager.workers[pod["metadata"]["uid"]] for pod in (polite, stubborn)
    }

    async def gone(name: str) -> float:
        began = trio.current_time()
        with trio.fail_after(15):
            await workers[name].done.wait()
        return trio.current_time() - began

    # polite exits on SIGTERM at once; stubborn (sleep as PID 1 ignores SIGTERM) is killed after 1 s
    await store.delete(polite)
    assert await gone("polite") < 5
    stubborn["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    stubborn["metadata"]["deletionGracePeriodSeconds"] = 1
    await store.put(stubborn, operation="update")
    assert 0.9 <= await gone("stubborn") < 8
    assert await runtime.list_containers({LABEL_POD: "stubborn"}) == []
    assert await runtime.list_containers({LABEL_POD: "polite"}) == []
    await store.wait_for(lambda: "default/pod/stubborn" in store.deleted)


async def test_spec_change_replaces_the_container(edge: Edge) -> None:
    store = edge.store
    pod = make_pod("changing", [{"name": "main", "command": ["sleep", "60"]}])
    await store.put(pod)
    before = container(await store.wait_status("default/changing", running))["containerID"]
    pod["spec"]["containers"][0]["command"] = ["sleep", "61"]
    await store.put(pod, operation="update")
    after = await store.wait_status("default/changing", lambda s: running(s) and container(s)["containerID"] != before)
    assert container(after)["restartCount"] == 1
    # the replaced attempt stays, stopped, as kubelet keeps one dead attempt (for `kubectl logs --previous`)
    listed = await edge.edged.runtime.list_containers({LABEL_POD: "changing"})
    attempts = sorted((c.labels[LABEL_RESTART_COUNT], c.state) for c in listed)
    assert attempts == [("0", "exited"), ("1", "running")], attempts


async def test_images_offline(edge: Edge) -> None:
    store = edge.store
    # `busybox` means busybox:latest, pulled Always: no registry answers, so the local copy runs, and the next
    # pod does not wait for the registry again
    await store.put(
        make_pod(
            "short-name", [{"name": "main", "image": "busybox", "imagePullPolicy": "", "command": ["sleep", "60"]}]
        )
    )
    await store.wait_status("default/short-name", running)
    began = trio.current_time()
    await store.put(
        make_pod("again", [{"name": "main", "image": "busybox", "imagePullPolicy": "", "command": ["sleep", "60"]}])
    )
    await store.wait_status("default/again", running)
    assert trio.current_time() - began < 2
    await store.put(make_pod("absent", [{"name": "main", "image": "localhost/absent:1", "imagePullPolicy": "Never"}]))
    status = await store.wait_status("default/absent", lambda s: "waiting" in container(s).get("state", {}))
    assert container(status)["state"]["waiting"]["reason"] == "ErrImageNeverPull"
    assert status["phase"] == "Pending"


async def test_init_containers_run_in_order_before_the_app(edge: Edge, tmp_path: Path) -> None:
    store = edge.store
    shared = [{"name": "work", "mountPath": "/work"}]
    pod = make_pod(
        "initialised",
        [
            {
                "name": "main",
                "command": ["sh", "-c", "cat /work/log > /out/seen; sleep 60"],
                "volumeMounts": [*shared, {"name": "out", "mountPath": "/out"}],
            }
        ],
        initContainers=[
            {"name": "first", "command": ["sh", "-c", "echo first >> /work/log"], "volumeMounts": shared},
            {"name": "second", "command": ["sh", "-c", "echo second >> /work/log"], "volumeMounts": shared},
        ],
        volumes=[{"name": "work", "emptyDir": {}}, {"name": "out", "hostPath": {"path": str(tmp_path / "out")}}],
    )
    await store.put(pod)
    status = await store.wait_status("default/initialised", running)
    assert [c["state"]["terminated"]["reason"] for c in status["initContainerStatuses"]] == ["Completed"] * 2
    assert any(c["type"] == "Initialized" and c["status"] == "True" for c in status["conditions"])
    await wait_until(lambda: (tmp_path / "out" / "seen").exists())
    assert (tmp_path / "out" / "seen").read_text() == "first\nsecond\n"

    failing = make_pod(
        "init-fails",
        [{"name": "main", "command": ["sleep", "60"]}],
        restartPolicy="Never",
        initContainers=[{"name": "setup", "command": ["sh", "-c", "exit 7"]}],
    )
    await store.put(failing)
    failed = await store.wait_status("default/init-fails", lambda s: s.get("phase") == "Failed")
    assert failed["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 7
    assert container(failed)["state"]["waiting"]["reason"] == "PodInitializing"


async def test_containers_of_a_pod_share_localhost(edge: Edge) -> None:
    store = edge.store
    port = free_port()
    pod = make_pod(
        "sidecar",
        [
            {
                "name": "server",
                "command": [
                    "sh",
                    "-c",
                    f"mkdir -p /www; echo hi > /www/index.html; httpd -f -p 127.0.0.1:{port} -h /www",
                ],
            },
            {
                "name": "client",
                "command": ["sleep", "60"],
                "readinessProbe": {
                    "exec": {"command": ["wget", "-q", "-O", "-", f"http://127.0.0.1:{port}/"]},
                    "periodSeconds": 0.3,
                },
            },
        ],
    )
    await store.put(pod)
    # the pod network is `none`, yet the client reaches the server on localhost: one network per pod
    await store.wait_status("default/sidecar", lambda s: running(s) and ready(s))
    sandboxes = await edge.edged.runtime.pod_sandboxes({"io.kubernetes.pod.uid": pod["metadata"]["uid"]})
    assert list(sandboxes) == [pod["metadata"]["uid"]]
    worker = edge.edged.manager.workers[pod["metadata"]["uid"]]
    await store.delete(pod)
    with trio.fail_after(15):
        await worker.done.wait()
    assert await edge.edged.runtime.pod_sandboxes({"io.kubernetes.pod.uid": pod["metadata"]["uid"]}) == {}


async def test_lifecycle_hooks(edge: Edge, tmp_path: Path) -> None:
    store = edge.store
    out = tmp_path / "hooks"
    pod = make_pod(
        "hooked",
        [
            {
                "name": "main",
                "command": ["sh", "-c", "trap 'echo term >> /out/log; exit 0' TERM; sleep 60 & wait"],
                "volumeMounts": [{"name": "out", "mountPath": "/out"}],
                "lifecycle": {
                    "postStart": {"exec": {"command": ["sh", "-c", "echo postStart >> /out/log"]}},
                    "preStop": {"exec": {"command": ["sh", "-c", "echo preStop >> /out/log"]}},
                },
            }
        ],
        volumes=[{"name": "out", "hostPath": {"path": str(out), "type": "DirectoryOrCreate"}}],
        terminationGracePeriodSeconds=10,
    )
    bad = make_pod(
        "bad-hook",
        [{"name": "main", "command": ["sleep", "60"], "lifecycle": {"postStart": {"exec": {"command": ["false"]}}}}],
    )
    await store.put(pod)
    await store.put(bad)
    await store.wait_status("default/hooked", running)
    worker = edge.edged.manager.workers[pod["metadata"]["uid"]]
    await store.delete(pod)
    with trio.fail_after(8):  # preStop, then SIGTERM: well inside the 10 s grace
        await worker.done.wait()
    assert (out / "log").read_text() == "postStart\npreStop\nterm\n"
    # a failing postStart hook kills the container; restartPolicy Always brings it back
    await store.wait_status("default/bad-hook", lambda s: container(s)["restartCount"] >= 1)

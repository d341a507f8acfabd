"""The cri runtime against a private containerd (CRI over gRPC with the vendored stubs), and edged on it.

Where containerd or grpcio is missing these tests fail with the reason; they never skip."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from kubeedge.plugins.edged.images import BUSYBOX_IMAGE, build_busybox_image

from .conftest import EdgeFactory, PodmanHost, make_pod
from .test_pods import container, running

PAUSE_IMAGE = "localhost/pause:latest"


@pytest.fixture(scope="session")
def image_archives(podman_host: PodmanHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Path]]:
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.fail("containerd is not installed (apt-get install containerd): the cri runtime cannot be tested")
    try:
        import grpc  # noqa: F401
    except ImportError:
        pytest.fail("grpcio is not installed (pip install -e '.[test]'): the cri runtime needs it")
    work = tmp_path_factory.mktemp("cri-images")
    # the sandbox ("pause") image: busybox that sleeps, built offline like the test image
    build_busybox_image(env=podman_host.env)
    build_busybox_image(
        image=PAUSE_IMAGE, env=podman_host.env, changes=("ENV PATH=/bin", 'ENTRYPOINT ["/bin/sleep", "2147483647"]')
    )
    archives = []
    for image in (BUSYBOX_IMAGE, PAUSE_IMAGE):
        archive = work / f"{image.split('/')[-1].replace(':', '-')}.tar"
        podman_host.podman("save", "--format", "docker-archive", "-o", str(archive), image)
        archives.append(archive)
    yield archives


async def load_images(endpoint: str, archives: list[Path]) -> None:
    from kubeedge.plugins.edged.cri import import_image

    for archive in archives:
        await trio.to_thread.run_sync(import_image, endpoint, archive)


async def remove_everything(runtime: Any) -> None:
    """Stop and remove every sandbox of the private containerd, so no shim outlives the test."""
    from kubeedge.plugins.edged.cri_api import cri_runtime_v1_pb2 as cri

    reply = await runtime._call("list sandboxes", runtime.runtime.ListPodSandbox, cri.ListPodSandboxRequest())
    for sandbox in reply.items:
        await runtime._call(
            "stop", runtime.runtime.StopPodSandbox, cri.StopPodSandboxRequest(pod_sandbox_id=sandbox.id)
        )
        await runtime._call(
            "remove", runtime.runtime.RemovePodSandbox, cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox.id)
        )


def test_cri_log_format() -> None:
    from kubeedge.plugins.edged.cri import parse_cri_log

    text = (
        "2026-01-01T00:00:00.1Z stdout F hello\n"
        "2026-01-01T00:00:00.2Z stderr P par\n"
        "2026-01-01T00:00:00.3Z stderr F t\n"
    )
    assert parse_cri_log(text) == "hello\npart\n"


async def test_runtime_on_private_containerd(image_archives: list[Path], tmp_path: Path, nursery: trio.Nursery) -> None:
    from kubeedge.plugins.edged.cri import CRIRuntime
    from kubeedge.plugins.edged.runtime import LABEL_CONTAINER, LABEL_NAMESPACE, LABEL_POD, LABEL_UID, ContainerConfig

    runtime = CRIRuntime({"startService": True}, data_dir=tmp_path, node_name="cri-node")
    await nursery.start(runtime.run)
    try:
        assert "containerd" in await runtime.version()
        await load_images(runtime.endpoint, image_archives)
        assert await runtime.image_present(BUSYBOX_IMAGE)
        assert not await runtime.image_present("localhost/absent:1")
        labels = {LABEL_POD: "p", LABEL_NAMESPACE: "default", LABEL_UID: "uid-1", LABEL_CONTAINER: "main"}
        config = ContainerConfig(
            name="main",
            image=BUSYBOX_IMAGE,
            command=["sh", "-c"],
            args=["echo started $WHO; trap 'exit 0' TERM; sleep 60 & wait"],
            env={"WHO": "cri"},
            labels=labels,
            network="host",
        )
        container_id = await runtime.create_container(config)
        await runtime.start_container(container_id)
        status = await runtime.inspect_container(container_id)
        assert status is not None and status.state == "running" and status.labels[LABEL_UID] == "uid-1"
        code, output = await runtime.exec_in_container(container_id, ["sh", "-c", "echo $WHO; exit 3"], timeout=5)
        assert (code, output) == (3, b"cri\n")
        usage = await runtime.container_stats(container_id)
        assert usage is not None and usage.cpu_usage_ns > 0 and usage.memory_working_set_bytes > 0, usage
        assert [c.id for c in await runtime.list_containers({LABEL_UID: "uid-1"})] == [container_id]
        await runtime.stop_container(container_id, 10)
        stopped = await runtime.inspect_container(container_id)
        assert stopped is not None and (stopped.state, stopped.exit_code) == ("exited", 0)
        assert await runtime.container_logs(container_id) == "started cri\n"
        await runtime.remove_container(container_id)
        assert await runtime.inspect_container(container_id) is None
        assert await runtime.container_stats(container_id) is None
        assert list(await runtime.pod_sandboxes({LABEL_UID: "uid-1"})) == ["uid-1"]  # kept for the next attempt
        await runtime.remove_pod_sandbox("uid-1")
        assert await runtime.pod_sandboxes({LABEL_UID: "uid-1"}) == {} and runtime._sandboxes == {}
    finally:
        await remove_everything(runtime)
        nursery.cancel_scope.cancel()


async def test_edged_runs_pods_through_cri(image_archives: list[Path], edge_factory: EdgeFactory) -> None:
    edge = await edge_factory(runtime="cri", cri={"startService": True}, podNetwork="host")
    runtime = edge.edged.runtime
    try:
        await load_images(runtime.endpoint, image_archives)
        store = edge.store
        pod = make_pod(
            "on-cri",
            [
                {
                    "name": "main",
                    "command": ["sleep", "60"],
                    "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 0.3},
                }
            ],
        )
        await store.put(pod)
        status = await store.wait_status("default/on-cri", lambda s: running(s) and container(s)["ready"])
        assert container(status)["containerID"].startswith("containerd://")
        assert store.node is not None and "containerd" in store.node["status"]["nodeInfo"]["containerRuntimeVersion"]
        worker = edge.edged.manager.workers[pod["metadata"]["uid"]]
        await store.delete(pod)
        with trio.fail_after(15):
            await worker.done.wait()
        assert runtime._sandboxes == {}
    finally:
        await remove_everything(runtime)

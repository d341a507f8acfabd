"""edged with the real metamanager: pods persisted at the edge come back after an edge restart with the cloud
away, and statuses reach the hub. The hub is a stand-in module named ``websocket`` (edgehub's bus name)
that sends what the cloud would and records what metamanager uploads."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import trio

from kubeedge import BaseModule, Context, Kernel, Message, Plugins
from kubeedge.profile import build_profile

from .conftest import NODE_PREFIX, PodmanHost, edged_config, make_pod


class Hub(BaseModule):
    name = "websocket"
    group = "hub"

    def __init__(self) -> None:
        super().__init__({})
        self.ctx: Context | None = None
        self.uploads: list[Message] = []
        self.acks: set[str] = set()
        self._changed = trio.Event()

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        self.ctx = ctx
        task_status.started()
        async for message in ctx.bus.channel(self.name):
            if message.operation == "response":
                self.acks.add(message.parent_msg_id)
            else:
                self.uploads.append(message)
            self._changed.set()
            self._changed = trio.Event()

    async def down(self, operation: str, obj: dict[str, Any]) -> str:
        assert self.ctx is not None
        meta = obj["metadata"]
        message = Message(
            source="edgecontroller",
            group="resource",
            operation=operation,
            resource=f"{meta['namespace']}/{obj['kind'].lower()}/{meta['name']}",
            resource_version=str(meta.get("resourceVersion", "1")),
            content=obj,
        )
        await self.ctx.send("metamanager", message)
        return message.msg_id

    def status(self, name: str) -> dict[str, Any]:
        for message in reversed(self.uploads):
            if message.resource == f"default/podstatus/{name}":
                return dict(message.content.get("Status") or {})
        return {}

    async def wait_for(self, predicate: Any, timeout: float = 20) -> None:  # noqa: ASYNC109
        with trio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()


def edge_kernel(name: str, data_dir: Path, config: dict[str, Any], hub: Hub) -> Kernel:
    modules_config = {"metamanager": {}, "edged": config}
    profile = build_profile({"role": "edge", "node": {"name": name}, "modules": modules_config}, data_dir=data_dir)
    plugins = Plugins()
    plugins.load("module", ["metamanager", "edged"])
    return Kernel(profile, plugins, [hub, *(plugins.module(n, c, profile) for n, c in modules_config.items())])


def container_id(status: dict[str, Any]) -> str:
    return str(status.get("containerStatuses", [{}])[0].get("containerID", ""))


async def test_pods_survive_an_edge_restart_through_metamanager(
    podman_host: PodmanHost, tmp_path: Path, short_dir: Path
) -> None:
    name = f"{NODE_PREFIX}{uuid.uuid4().hex[:6]}"
    sockets = short_dir
    config = edged_config(sockets)
    pod = make_pod(
        "kept",
        [
            {
                "name": "main",
                "command": ["sh", "-c", "echo $GREETING; sleep 600"],
                "env": [{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "g"}}}],
            }
        ],
    )
    pod["metadata"]["resourceVersion"] = "5"
    configmap = {
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": "default", "resourceVersion": "4"},
        "data": {"g": "hello"},
    }
    try:
        hub = Hub()
        kernel = edge_kernel(name, tmp_path, config, hub)
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: kernel.run(handle_signals=False, task_status=task_status))
            acked = {await hub.down("insert", configmap), await hub.down("insert", pod)}
            await hub.wait_for(lambda: acked <= hub.acks and hub.status("kept").get("phase") == "Running")
            first = container_id(hub.status("kept"))
            await hub.wait_for(
                lambda: any(m.resource == f"default/node/{name}" and m.operation == "insert" for m in hub.uploads)
            )
            kernel.stop()

        # the node restarts with the cloud away: nothing comes down, metamanager's store is all there is
        hub = Hub()
        kernel = edge_kernel(name, tmp_path, config, hub)
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: kernel.run(handle_signals=False, task_status=task_status))
            await hub.wait_for(lambda: hub.status("kept").get("phase") == "Running")
            status = hub.status("kept")
            assert container_id(status) == first and status["containerStatuses"][0]["restartCount"] == 0

            # a delete from the cloud goes through metamanager to edged, which removes the containers
            worker = next(m for m in kernel.modules if m.name == "edged").manager.workers[pod["metadata"]["uid"]]
            await hub.down("delete", pod)
            with trio.fail_after(15):
                await worker.done.wait()
            assert podman_host.containers(name) == [] and podman_host.pods(name) == []
            kernel.stop()
    finally:
        podman_host.remove_node(name)

"""The MetaServer, read by the official kubernetes client (list, get, watch) from the edge's own store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from kubeedge import BaseModule, Context, Kernel, Message
from kubeedge.kernel import resolve
from kubeedge.profile import build_profile


class Uplink(BaseModule):
    """Where edgehub would be: takes metamanager's ACKs and uploads. The cloud is away in these tests."""

    name = "websocket"
    group = "hub"

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for _ in ctx.bus.channel(self.name):
            pass


@asynccontextmanager
async def edge(tmp_path: Path) -> AsyncIterator[Kernel]:
    profile = build_profile(
        {"role": "edge", "node": {"name": "edge-1"}, "modules": {"metamanager": {}, "metaserver": {"port": 0}}},
        data_dir=tmp_path,
    )
    plugins, modules = resolve(profile)
    kernel = Kernel(profile, plugins, [Uplink(), *modules])
    async with trio.open_nursery() as nursery:
        await nursery.start(kernel.run)
        yield kernel
        kernel.stop()


def port(kernel: Kernel) -> int:
    return next(m for m in kernel.modules if m.name == "metaserver").port  # type: ignore[attr-defined, no-any-return]


def pod(name: str, rv: str, labels: dict[str, str] | None = None, node: str = "edge-1") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "resourceVersion": rv,
            "uid": f"uid-{name}",
            "labels": labels or {},
        },
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
    }


async def store(kernel: Kernel, obj: dict[str, Any], operation: str = "insert") -> None:
    meta = obj["metadata"]
    await kernel.bus.send(
        "metamanager",
        Message(
            source="edgecontroller",
            group="resource",
            operation=operation,
            resource=f"{meta['namespace']}/{obj['kind'].lower()}/{meta['name']}",
            resource_version=meta["resourceVersion"],
            content=obj,
        ),
    )


async def wait_listed(kernel: Kernel, count: int) -> None:
    with trio.fail_after(5):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port(kernel)}") as client:
            # metamanager commits on its database thread: the API is the only thing to watch for it.
            while len((await client.get("/api/v1/pods")).json()["items"]) < count:  # noqa: ASYNC110
                await trio.sleep(0.02)


def kube_client(kernel: Kernel) -> Any:
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{port(kernel)}"
    return client.CoreV1Api(client.ApiClient(configuration))


async def test_list_get_and_selectors_with_the_kubernetes_client(tmp_path: Path) -> None:
    async with edge(tmp_path) as kernel:
        await store(kernel, pod("web-1", "10", {"app": "web"}))
        await store(kernel, pod("db-1", "11", {"app": "db"}))
        await wait_listed(kernel, 2)
        api = kube_client(kernel)
        pods = await trio.to_thread.run_sync(lambda: api.list_namespaced_pod("default"))
        assert sorted(p.metadata.name for p in pods.items) == ["db-1", "web-1"]
        assert pods.metadata.resource_version == "11"
        web = await trio.to_thread.run_sync(lambda: api.list_pod_for_all_namespaces(label_selector="app=web"))
        assert [p.metadata.name for p in web.items] == ["web-1"]
        named = await trio.to_thread.run_sync(
            lambda: api.list_namespaced_pod("default", field_selector="metadata.name=db-1")
        )
        assert [p.metadata.name for p in named.items] == ["db-1"]
        one = await trio.to_thread.run_sync(lambda: api.read_namespaced_pod("web-1", "default"))
        assert one.spec.node_name == "edge-1"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port(kernel)}") as http:
            missing = await http.get("/api/v1/namespaces/default/pods/ghost")
            write = await http.post("/api/v1/namespaces/default/pods", json=pod("x", "1"))
            unknown = await http.get("/api/v1/widgets")
        assert missing.status_code == 404 and missing.json()["reason"] == "NotFound"
        assert write.status_code == 405 and write.json()["kind"] == "Status"
        assert unknown.status_code == 404


async def test_watch_follows_changes_from_the_store(tmp_path: Path) -> None:
    from kubernetes import watch

    async with edge(tmp_path) as kernel:
        await store(kernel, pod("web-1", "10"))
        await wait_listed(kernel, 1)
        api = kube_client(kernel)
        listed = await trio.to_thread.run_sync(lambda: api.list_namespaced_pod("default"))
        events: list[tuple[str, str, str]] = []

        def follow() -> None:
            stream = watch.Watch().stream(
                api.list_namespaced_pod, "default", resource_version=listed.metadata.resource_version, timeout_seconds=5
            )
            for event in stream:
                events.append((event["type"], event["object"].metadata.name, event["object"].metadata.resource_version))
                if len(events) == 2:
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, follow)
            server = next(m for m in kernel.modules if m.name == "metaserver")
            with trio.fail_after(5):
                # The client's worker thread connects in its own time; the server's watcher set shows it.
                while not server.watchers:  # type: ignore[attr-defined]  # noqa: ASYNC110
                    await trio.sleep(0.01)
            await store(kernel, pod("web-2", "12"))
            await store(kernel, pod("web-1", "13"), operation="update")
        assert events == [("ADDED", "web-2", "12"), ("MODIFIED", "web-1", "13")]


async def test_it_answers_from_the_store_after_a_restart_without_the_cloud(tmp_path: Path) -> None:
    async with edge(tmp_path) as kernel:
        await store(kernel, pod("web-1", "10"))
        await wait_listed(kernel, 1)
    async with edge(tmp_path) as kernel:
        api = kube_client(kernel)
        pods = await trio.to_thread.run_sync(lambda: api.list_namespaced_pod("default"))
        assert [p.metadata.name for p in pods.items] == ["web-1"]

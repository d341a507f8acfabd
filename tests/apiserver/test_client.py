"""The embedded apiserver against the official Python ``kubernetes`` client (run in worker threads)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.rest import ApiException

from .helpers import DEVICE_MODEL, Cloud, device, running_cloud

GROUP, VERSION = "devices.kubeedge.io", "v1beta1"


def configmap(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels or {}}, "data": data}


async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))


def collect_watch(api_client: Any, resource_version: str, count: int, **kwargs: Any) -> list[tuple[str, str, str]]:
    """Watch configmaps in ``default`` from ``resource_version`` until ``count`` events (blocking)."""
    core = k8s.CoreV1Api(api_client)
    seen: list[tuple[str, str, str]] = []
    stream = watch.Watch().stream(
        core.list_namespaced_config_map, "default", resource_version=resource_version, timeout_seconds=10, **kwargs
    )
    for event in stream:
        seen.append((event["type"], event["object"].metadata.name, event["object"].metadata.resource_version))
        if len(seen) >= count:
            break
    return seen


async def test_list_selectors_conflict_and_errors(cloud: Cloud) -> None:
    api_client = cloud.client()
    core = k8s.CoreV1Api(api_client)
    for index in range(5):
        labels = {"tier": "front" if index % 2 else "back", "index": str(index)}
        await in_thread(core.create_namespaced_config_map, "default", configmap(f"cm-{index}", labels, n=str(index)))
    front = await in_thread(core.list_namespaced_config_map, "default", label_selector="tier=front")
    assert [i.metadata.name for i in front.items] == ["cm-1", "cm-3"]
    notin = await in_thread(core.list_namespaced_config_map, "default", label_selector="index notin (0,1),tier!=front")
    assert [i.metadata.name for i in notin.items] == ["cm-2", "cm-4"]
    by_name = await in_thread(core.list_config_map_for_all_namespaces, field_selector="metadata.name=cm-2")
    assert [i.metadata.name for i in by_name.items] == ["cm-2"]
    by_ns = await in_thread(core.list_config_map_for_all_namespaces, field_selector="metadata.namespace=kube-system")
    assert by_ns.items == []
    page = await in_thread(core.list_namespaced_config_map, "default", limit=2)
    assert len(page.items) == 2 and page.metadata._continue
    rest = await in_thread(core.list_namespaced_config_map, "default", limit=10, _continue=page.metadata._continue)
    assert [i.metadata.name for i in page.items + rest.items] == [f"cm-{i}" for i in range(5)]

    current = await in_thread(core.read_namespaced_config_map, "cm-0", "default")
    current.data = {"n": "changed"}
    updated = await in_thread(core.replace_namespaced_config_map, "cm-0", "default", current)
    assert int(updated.metadata.resource_version) > int(current.metadata.resource_version)
    current.data = {"n": "stale"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as stale:
        await in_thread(core.replace_namespaced_config_map, "cm-0", "default", current)
    assert stale.value.status == 409 and json.loads(stale.value.body or "{}")["reason"] == "Conflict"
    with pytest.raises(ApiException) as exists:
        await in_thread(core.create_namespaced_config_map, "default", configmap("cm-1"))
    assert exists.value.status == 409 and json.loads(exists.value.body or "{}")["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as missing:
        await in_thread(core.read_namespaced_config_map, "nope", "default")
    assert missing.value.status == 404
    with pytest.raises(ApiException) as no_namespace:
        await in_thread(core.create_namespaced_config_map, "nowhere", configmap("x"))
    assert no_namespace.value.status == 404
    await in_thread(core.delete_namespaced_config_map, "cm-4", "default")
    remaining = await in_thread(core.list_namespaced_config_map, "default")
    assert len(remaining.items) == 4


async def test_custom_objects_status_and_patches(cloud: Cloud) -> None:
    api_client = cloud.client()
    custom = k8s.CustomObjectsApi(api_client)
    await in_thread(custom.create_namespaced_custom_object, GROUP, VERSION, "default", "devicemodels", DEVICE_MODEL)
    created = await in_thread(custom.create_namespaced_custom_object, GROUP, VERSION, "default", "devices", device())
    assert created["metadata"]["uid"] and created["metadata"]["generation"] == 1
    patched = await in_thread(
        custom.patch_namespaced_custom_object,
        GROUP,
        VERSION,
        "default",
        "devices",
        "thermo-1",
        {"status": {"state": "online", "twins": [{"propertyName": "temperature", "reported": {"value": "21"}}]}},
    )
    # Device has no status subresource in its CRD: status is written through the object itself.
    assert patched["status"]["twins"][0]["reported"]["value"] == "21"
    assert patched["metadata"]["generation"] == 1

    # ObjectSync has a status subresource: the object ignores status, /status ignores the rest.
    sync = {
        "apiVersion": "reliablesyncs.kubeedge.io/v1alpha1",
        "kind": "ObjectSync",
        "metadata": {"name": "edge-1.abc"},
        "spec": {"objectAPIVersion": "v1", "objectKind": "pods", "objectName": "web"},
        "status": {"objectResourceVersion": "ignored"},
    }
    group, version = "reliablesyncs.kubeedge.io", "v1alpha1"
    made = await in_thread(custom.create_namespaced_custom_object, group, version, "default", "objectsyncs", sync)
    assert "status" not in made
    status = await in_thread(
        custom.patch_namespaced_custom_object_status,
        group,
        version,
        "default",
        "objectsyncs",
        "edge-1.abc",
        {"status": {"objectResourceVersion": "42"}, "spec": {"objectName": "ignored"}},
    )
    assert status["status"] == {"objectResourceVersion": "42"} and status["spec"]["objectName"] == "web"
    main = await in_thread(
        custom.patch_namespaced_custom_object,
        group,
        version,
        "default",
        "objectsyncs",
        "edge-1.abc",
        {"status": {"objectResourceVersion": "1"}, "spec": {"objectName": "web2"}},
    )
    assert main["status"] == {"objectResourceVersion": "42"} and main["spec"]["objectName"] == "web2"

    with pytest.raises(ApiException) as bad:
        await in_thread(
            custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            "default",
            "devices",
            "thermo-1",
            {"spec": {"nodeName": 7}},
        )
    assert bad.value.status == 422
    assert json.loads(bad.value.body or "{}")["details"]["causes"][0]["field"] == "spec.nodeName"

    # Garbage collection: an object owned by the device goes with it (DeviceStatus, as KubeEdge 1.23 writes it).
    owner = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Device",
        "name": "thermo-1",
        "uid": created["metadata"]["uid"],
    }
    await in_thread(
        custom.create_namespaced_custom_object,
        GROUP,
        VERSION,
        "default",
        "devicestatuses",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "DeviceStatus",
            "metadata": {"name": "thermo-1", "ownerReferences": [owner]},
            "spec": {},
        },
    )
    await in_thread(custom.delete_namespaced_custom_object, GROUP, VERSION, "default", "devices", "thermo-1")
    statuses = await in_thread(custom.list_namespaced_custom_object, GROUP, VERSION, "default", "devicestatuses")
    assert statuses["items"] == []


async def test_watch_events_bookmarks_and_gone(tmp_path: Path) -> None:
    async with running_cloud(tmp_path / "cloud", bookmarkInterval=0.2, watchCacheSize=20) as cloud:
        api_client = cloud.client()
        core = k8s.CoreV1Api(api_client)
        start = (await in_thread(core.list_namespaced_config_map, "default")).metadata.resource_version
        await in_thread(core.create_namespaced_config_map, "default", configmap("a", x="1"))
        await in_thread(core.patch_namespaced_config_map, "a", "default", {"data": {"x": "2"}})
        await in_thread(core.delete_namespaced_config_map, "a", "default")
        seen = await in_thread(collect_watch, api_client, start, 3)
        assert [(t, n) for t, n, _ in seen] == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
        assert [int(rv) for _, _, rv in seen] == sorted(int(rv) for _, _, rv in seen)

        # Bookmarks carry the current resourceVersion while nothing changes.
        def raw_watch() -> bytes:
            response = core.list_namespaced_config_map(
                "default",
                watch=True,
                allow_watch_bookmarks=True,
                resource_version=seen[-1][2],
                timeout_seconds=1,
                _preload_content=False,
            )
            return bytes(response.data)  # type: ignore[attr-defined]

        lines = [json.loads(line) for line in (await in_thread(raw_watch)).decode().splitlines() if line.strip()]
        assert lines and all(e["type"] == "BOOKMARK" for e in lines)
        assert lines[0]["object"]["metadata"]["resourceVersion"] == seen[-1][2]

        # Push the first events out of the window: watching from there is 410 Gone.
        for index in range(25):
            await in_thread(core.create_namespaced_config_map, "default", configmap(f"filler-{index}"))
        with pytest.raises(ApiException) as gone:
            await in_thread(collect_watch, api_client, start, 1)
        assert gone.value.status == 410


async def test_watch_resumes_after_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "cloud"
    async with running_cloud(data_dir) as cloud:
        core = k8s.CoreV1Api(cloud.client())
        await in_thread(core.create_namespaced_config_map, "default", configmap("before", x="1"))
        listed = await in_thread(core.list_namespaced_config_map, "default")
        resume_from = listed.metadata.resource_version
        await in_thread(core.patch_namespaced_config_map, "before", "default", {"data": {"x": "2"}})
        token = cloud.api.token
    async with running_cloud(data_dir) as cloud:
        assert cloud.api.token == token  # the kubeconfig's credentials survive a restart
        api_client = cloud.client()
        core = k8s.CoreV1Api(api_client)
        kept = await in_thread(core.read_namespaced_config_map, "before", "default")
        assert kept.data == {"x": "2"}
        await in_thread(core.create_namespaced_config_map, "default", configmap("after"))
        seen = await in_thread(collect_watch, api_client, resume_from, 2)
        assert [(t, n) for t, n, _ in seen] == [("MODIFIED", "before"), ("ADDED", "after")]
        assert int(seen[1][2]) > int(seen[0][2]) > int(resume_from)


async def test_watch_with_selector_sees_objects_move_in_and_out(cloud: Cloud) -> None:
    api_client = cloud.client()
    core = k8s.CoreV1Api(api_client)
    start = (await in_thread(core.list_namespaced_config_map, "default")).metadata.resource_version
    await in_thread(core.create_namespaced_config_map, "default", configmap("m", {"team": "a"}))
    await in_thread(core.patch_namespaced_config_map, "m", "default", {"metadata": {"labels": {"team": "b"}}})
    await in_thread(core.patch_namespaced_config_map, "m", "default", {"metadata": {"labels": {"team": "a"}}})
    seen = await in_thread(collect_watch, api_client, start, 3, label_selector="team=a")
    assert [t for t, _, _ in seen] == ["ADDED", "DELETED", "ADDED"]

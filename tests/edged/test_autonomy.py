"""Edge autonomy: edged restarts (new kernel, same data dir) while the cloud is away and takes its pods back
from the local store without recreating containers that still match; orphans are removed."""

from __future__ import annotations

from functools import partial

import trio

from kubeedge.plugins.edged.runtime import LABEL_POD

from .conftest import Edge, PodmanHost, Store, make_pod
from .test_pods import container, running


async def test_edge_restart_with_the_cloud_away(edge: Edge, podman_host: PodmanHost, nursery: trio.Nursery) -> None:
    store = edge.store
    steady = make_pod("steady", [{"name": "main", "command": ["sleep", "600"]}])
    killed = make_pod("killed", [{"name": "main", "command": ["sleep", "600"]}])
    orphan = make_pod("orphan", [{"name": "main", "command": ["sleep", "600"]}])
    for pod in (steady, killed, orphan):
        await store.put(pod)
    before = {}
    for name in ("steady", "killed", "orphan"):
        before[name] = container(await store.wait_status(f"default/{name}", running))["containerID"]

    await edge.stop()  # edged (and its podman service) gone; the containers run on
    running_ids = {c["Id"] for c in podman_host.containers(edge.name) if c["State"] == "running"}
    assert {cid.removeprefix("podman://") for cid in before.values()} <= running_ids
    # while the node is down: one container dies, and the store loses a pod (deleted before the outage)
    killed_id = before["killed"].removeprefix("podman://")
    await trio.to_thread.run_sync(partial(podman_host.podman, "stop", "-t", "0", killed_id))
    local = Store()
    local.objects = {k: v for k, v in store.objects.items() if not k.endswith("/orphan")}

    await edge.start(nursery, local)
    assert "default/pod" in local.queries
    after = await local.wait_status("default/steady", running)
    assert container(after)["containerID"] == before["steady"] and container(after)["restartCount"] == 0
    revived = await local.wait_status("default/killed", lambda s: running(s) and container(s)["restartCount"] == 1)
    assert container(revived)["containerID"] != before["killed"]
    runtime = edge.edged.runtime
    assert await runtime.list_containers({LABEL_POD: "orphan"}) == []
    assert not (edge.data_dir / "edged" / "pods" / orphan["metadata"]["uid"]).exists()

    # the cloud comes back and sends the pod again: nothing is recreated
    await local.put(steady, operation="update")
    await local.put(make_pod("later", [{"name": "main", "command": ["sleep", "600"]}]))
    await local.wait_status("default/later", running)
    listed = await runtime.list_containers({LABEL_POD: "steady"})
    assert [f"podman://{c.id}" for c in listed] == [before["steady"]]
    assert container(local.status("default/steady"))["restartCount"] == 0

"""The ``edged`` module: pods on the edge node through a container-runtime plugin.

edged takes pods, configmaps and secrets from metamanager and makes the node match them through the runtime
the profile names (``runtime: podman`` by default; runtimes come from the ``kubeedge_container_runtime``
hook of any loaded plugin, so a third party's runtime is one more plugin). It reports pod status, registers
the Node and reports node status through metamanager, and after a restart picks up the pods from the local
store without touching containers that still match. See README.md in this folder.
"""

from __future__ import annotations

from typing import Any

import trio

from kubeedge import BaseModule, Context, hookimpl

__all__ = ["Edged"]


class Edged(BaseModule):
    name = "edged"
    group = "edged"
    after = ("metamanager",)

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.manager: Any = None
        self.runtime: Any = None
        self.ready = trio.Event()

    def make_runtime(self, ctx: Context) -> Any:
        from .runtime import ContainerRuntime

        wanted = str(self.config.get("runtime", "podman"))
        runtimes = ctx.plugins.container_runtimes()
        if wanted not in runtimes:
            known = ", ".join(sorted(runtimes)) or "none"
            raise ValueError(f"edged: container runtime {wanted!r} is not provided by any loaded plugin ({known})")
        cls = runtimes[wanted]
        if isinstance(cls, str):  # "package.module:Class", imported now that it is chosen
            import importlib

            module_name, _, attribute = cls.partition(":")
            cls = getattr(importlib.import_module(module_name), attribute)
        if not (isinstance(cls, type) and issubclass(cls, ContainerRuntime)):
            raise TypeError(f"edged: runtime {wanted!r} is {cls!r}, not a ContainerRuntime subclass")
        return cls(dict(self.config.get(wanted) or {}), data_dir=ctx.data_dir / "edged", node_name=ctx.node_name)

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        from .manager import PodManager, Settings

        settings = Settings(self.config)
        runtime = self.make_runtime(ctx)
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.run)
            self.runtime = runtime
            manager = PodManager(ctx, runtime, settings, nursery)
            self.manager = manager
            await manager.recover()
            nursery.start_soon(manager.relist)
            nursery.start_soon(manager.report_pod_statuses)
            nursery.start_soon(manager.node_loop)
            nursery.start_soon(manager.image_gc_loop)
            self.ready.set()
            task_status.started()
            async for message in ctx.bus.channel(self.name):
                await manager.handle(message)


_BACKOFF = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "initialSeconds": {"type": "number", "exclusiveMinimum": 0},
        "maxSeconds": {"type": "number", "exclusiveMinimum": 0},
        "resetSeconds": {"type": "number", "exclusiveMinimum": 0},
    },
}

_IMAGE_GC = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "highThresholdPercent": {"type": "integer", "minimum": 0, "maximum": 100},
        "lowThresholdPercent": {"type": "integer", "minimum": 0, "maximum": 100},
        "minAgeSeconds": {"type": "number", "minimum": 0},
        "intervalSeconds": {"type": "number", "minimum": 0},
    },
}


@hookimpl
def kubeedge_config_schema() -> dict[str, Any]:
    from .podman import SCHEMA as PODMAN

    return {
        "type": "object",
        # other keys are sections of third-party runtimes, named like `podman` and `cri`
        "additionalProperties": {"type": "object"},
        "properties": {
            "runtime": {"type": "string", "description": "name of a container runtime plugin (podman, cri, ...)"},
            "podman": PODMAN,
            "cri": {"type": "object"},
            "podNetwork": {"type": "string", "description": "network of pods without hostNetwork: bridge|none|host"},
            "nodeIP": {"type": "string"},
            "podStatusInterval": {"type": "number", "exclusiveMinimum": 0},
            "nodeStatusInterval": {"type": "number", "exclusiveMinimum": 0},
            "relistInterval": {"type": "number", "exclusiveMinimum": 0},
            "resyncInterval": {"type": "number", "exclusiveMinimum": 0},
            "backoff": _BACKOFF,
            "imageGC": _IMAGE_GC,
            "registerNode": {"type": "boolean"},
            "maxPods": {"type": "integer", "minimum": 1},
            "queryTimeout": {"type": "number", "exclusiveMinimum": 0},
            "pullFailureMemorySeconds": {"type": "number", "minimum": 0},
        },
    }


@hookimpl
def kubeedge_module(config: dict[str, Any]) -> Edged:
    return Edged(config)


@hookimpl
def kubeedge_container_runtime() -> dict[str, Any]:
    # Import paths, not classes: edged imports only the runtime the profile picks, so a podman node never
    # loads grpc and the CRI stubs (about 13 MB of RSS).
    import importlib.util

    runtimes: dict[str, Any] = {"podman": "kubeedge.plugins.edged.podman:PodmanRuntime"}
    if importlib.util.find_spec("grpc") is not None:  # without grpcio the cri runtime is not offered
        runtimes["cri"] = "kubeedge.plugins.edged.cri:CRIRuntime"
    return runtimes

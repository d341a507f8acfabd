"""The runner: dependency order, readiness, reverse shutdown, restart with backoff, loud start-up failures."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from kubeedge import BaseModule, Context, Kernel, KernelError, Message, ModuleFailed, Plugins, hookimpl
from kubeedge.kernel import order_modules, resolve
from kubeedge.profile import build_profile


class Recorder(BaseModule):
    """A module that records its life in a shared journal."""

    def __init__(
        self, name: str, journal: list[str], *, after: tuple[str, ...] = (), fail: str = "", on_failure: str = "restart"
    ) -> None:
        super().__init__({})
        self.name = self.group = name
        self.after = after
        self.journal = journal
        self.fail = fail
        self.on_failure = on_failure  # type: ignore[assignment]
        self.runs = 0
        self.third_run = trio.Event()

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        self.runs += 1
        if self.runs == 3:
            self.third_run.set()
        self.journal.append(f"start {self.name}")
        if self.fail == "before-ready":
            raise RuntimeError("cannot bind port")
        task_status.started()
        try:
            async for message in ctx.bus.channel(self.name):
                if message.operation == "crash":
                    raise RuntimeError(f"crash #{self.runs}")
                if message.sync:
                    ctx.send_resp(message.reply(f"{self.name} got {message.content}", source=self.name))
        finally:
            self.journal.append(f"stop {self.name}")


def profile(tmp_path: Path, **extra: Any) -> Any:
    return build_profile({"role": "edge", "modules": {}, **extra}, data_dir=tmp_path)


async def test_modules_start_in_dependency_order_and_stop_in_reverse(tmp_path: Path) -> None:
    journal: list[str] = []
    modules = [
        Recorder("edged", journal, after=("metamanager",)),
        Recorder("metamanager", journal),
        Recorder("twin", journal, after=("websocket",)),
    ]  # websocket is not loaded: no constraint
    kernel = Kernel(profile(tmp_path), Plugins(), order_modules(modules))
    async with trio.open_nursery() as nursery:
        await nursery.start(kernel.run)
        assert kernel.started.is_set()
        assert kernel.ctx.states == {"metamanager": "running", "edged": "running", "twin": "running"}
        reply = await kernel.bus.send_sync("edged", Message(source="t", operation="query", content=1), timeout=5)
        assert reply.content == "edged got 1"
        kernel.stop()
    assert journal == ["start metamanager", "start edged", "start twin", "stop twin", "stop edged", "stop metamanager"]
    assert kernel.startup_seconds is not None


def test_dependency_cycles_are_named() -> None:
    a = Recorder("a", [], after=("b",))
    b = Recorder("b", [], after=("a",))
    with pytest.raises(KernelError, match="cycle: a -> b -> a"):
        order_modules([a, b])


async def test_a_module_failing_before_ready_stops_start_up_and_is_named(tmp_path: Path) -> None:
    journal: list[str] = []
    modules = [
        Recorder("metamanager", journal),
        Recorder("edged", journal, fail="before-ready"),
        Recorder("twin", journal),
    ]
    kernel = Kernel(profile(tmp_path), Plugins(), modules)
    with pytest.raises(ModuleFailed, match="module 'edged' failed to start: RuntimeError: cannot bind port"):
        await kernel.run(handle_signals=False)
    assert "start twin" not in journal  # nothing after the failed module was started
    assert journal[-1] == "stop metamanager"  # what had started was stopped again


async def test_a_crashed_module_restarts_with_backoff(tmp_path: Path, autojump_clock: Any) -> None:
    journal: list[str] = []
    module = Recorder("twin", journal)
    kernel = Kernel(profile(tmp_path), Plugins(), [module])
    async with trio.open_nursery() as nursery:
        await nursery.start(kernel.run)
        began = trio.current_time()
        await kernel.bus.send("twin", Message(operation="crash"))
        await kernel.bus.send("twin", Message(operation="crash"))  # waits in the channel for the second run
        await module.third_run.wait()
        await trio.testing.wait_all_tasks_blocked()  # the supervisor has seen it start
        elapsed = trio.current_time() - began
        assert 3.0 <= elapsed < 4.0  # 1 s, then 2 s
        assert kernel.ctx.states["twin"] == "running"
        kernel.stop()


async def test_a_module_with_stop_policy_stops_the_node(tmp_path: Path) -> None:
    journal: list[str] = []
    kernel = Kernel(profile(tmp_path), Plugins(), [Recorder("a", journal), Recorder("b", journal, on_failure="stop")])

    async def crash_b() -> None:
        await kernel.started.wait()
        await kernel.bus.send("b", Message(operation="crash"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(crash_b)
        with pytest.raises(ModuleFailed, match="module 'b' failed: RuntimeError: crash #1"):
            await kernel.run(handle_signals=False)
    assert journal[-1] == "stop a"


def make_plugin(module_factory: Any, schema: dict[str, Any] | None = None) -> types.ModuleType:
    plugin = types.ModuleType("test_plugin")

    @hookimpl
    def kubeedge_module(name: str, config: dict[str, Any]) -> Any:
        return module_factory(name, config)

    @hookimpl
    def kubeedge_config_schema() -> dict[str, Any] | None:
        return schema

    plugin.kubeedge_module = kubeedge_module  # type: ignore[attr-defined]
    plugin.kubeedge_config_schema = kubeedge_config_schema  # type: ignore[attr-defined]
    return plugin


def test_resolve_validates_each_module_section_against_its_schema(tmp_path: Path) -> None:
    plugins = Plugins()
    schema = {"type": "object", "properties": {"port": {"type": "integer"}}, "additionalProperties": False}
    plugins.register("module", "echo", make_plugin(lambda name, cfg: Recorder(name, []), schema))
    good = build_profile({"role": "edge", "modules": {"echo": {"port": 1}}}, data_dir=tmp_path)
    _, modules = resolve(good, plugins)
    assert [m.name for m in modules] == ["echo"]
    bad = build_profile({"role": "edge", "modules": {"echo": {"port": "x"}}}, data_dir=tmp_path)
    with pytest.raises(Exception, match=r"modules\.echo\.port: expected integer"):
        resolve(bad, plugins)

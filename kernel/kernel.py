"""The kernel runner: resolve a profile into modules, start them in dependency order, supervise, stop.

Start-up is all or nothing: every plugin is loaded and every config validated before the first module
starts; a module that fails before it is ready stops the node with its name in the message. Once running,
a module that crashes is restarted with backoff (1 s doubling to 30 s) or stops the node, as its
``on_failure`` says. Shutdown (SIGINT/SIGTERM or :meth:`Kernel.stop`) cancels modules in reverse start
order, each given what is left of ``shutdownTimeout``.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import trio

# Imported before any plugin can import anyio (httpx does): asyncio libraries started under trio-asyncio
# otherwise find "no running event loop".
import trio_asyncio

from .bus import Bus
from .module import Context, Module
from .profile import Profile, validate
from .registry import Plugins

__all__ = ["Kernel", "KernelError", "ModuleFailed", "order_modules", "resolve"]

log = logging.getLogger("kubeedge.kernel")

BACKOFF_START = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0  # a module that ran this long before crashing starts again from the shortest backoff


class KernelError(Exception):
    """The node cannot start or had to stop; the text names the module or plugin at fault."""


class ModuleFailed(KernelError):
    def __init__(self, name: str, exc: BaseException, *, starting: bool) -> None:
        phase = "failed to start" if starting else "failed"
        super().__init__(f"module {name!r} {phase}: {type(exc).__name__}: {exc}")
        self.name = name
        self.__cause__ = exc


@dataclass
class _Running:
    module: Module
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)


def resolve(profile: Profile, plugins: Plugins | None = None) -> tuple[Plugins, list[Module]]:
    """Load and validate everything the profile names; return the modules in start order.

    Raises :class:`PluginError` or :class:`ProfileError`; nothing has started when either is raised.
    """
    plugins = plugins or Plugins()
    plugins.load("module", list(profile.modules))
    plugins.load("mapper", list(profile.mappers))
    for kind, sections in (("module", profile.modules), ("mapper", profile.mappers)):
        for name, config in sections.items():
            schema = plugins.config_schema(kind, name)  # type: ignore[arg-type]
            if schema is not None:
                validate(config, schema, source=profile.source, prefix=f"{kind}s.{name}")
    modules = [plugins.module(name, config, profile) for name, config in profile.modules.items()]
    return plugins, order_modules(modules)


def order_modules(modules: list[Module]) -> list[Module]:
    """Order modules so each starts after the loaded modules its ``after`` names; profile order otherwise."""
    by_name = {m.name: m for m in modules}
    ordered: list[Module] = []
    state: dict[str, str] = {}

    def visit(module: Module, chain: list[str]) -> None:
        mark = state.get(module.name)
        if mark == "done":
            return
        if mark == "visiting":
            cycle = " -> ".join([*chain, module.name])
            raise KernelError(f"modules wait for each other in a cycle: {cycle}")
        state[module.name] = "visiting"
        for dep in getattr(module, "after", ()) or ():
            if dep in by_name:
                visit(by_name[dep], [*chain, module.name])
        state[module.name] = "done"
        ordered.append(module)

    for module in modules:
        visit(module, [])
    return ordered


class Kernel:
    """One node: a bus, a context and the modules of one profile."""

    def __init__(self, profile: Profile, plugins: Plugins, modules: list[Module]) -> None:
        self.profile = profile
        self.plugins = plugins
        self.modules = modules
        self.bus = Bus(profile.bus_buffer)
        self.ctx = Context(bus=self.bus, profile=profile, plugins=plugins)
        self.started = trio.Event()
        self.startup_seconds: float | None = None
        self._stop = trio.Event()
        self._running: list[_Running] = []
        for module in modules:
            self.bus.add_module(module.name, module.group)
            self.ctx.states[module.name] = "pending"

    @classmethod
    def from_profile(cls, profile: Profile) -> Kernel:
        plugins, modules = resolve(profile)
        return cls(profile, plugins, modules)

    def stop(self) -> None:
        """Ask the node to shut down; :meth:`run` returns once every module has stopped."""
        self._stop.set()

    async def run(
        self, *, handle_signals: bool = True, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the node until stopped. Raises :class:`KernelError` when a module fails for good."""
        begin = time.perf_counter()
        failure: list[KernelError] = []
        try:
            async with trio_asyncio.open_loop() as loop:
                loop.set_exception_handler(_log_asyncio_error)
                async with trio.open_nursery() as nursery:
                    if handle_signals:
                        nursery.start_soon(self._watch_signals)
                    for module in self.modules:
                        running = _Running(module)
                        self._running.append(running)
                        try:
                            await nursery.start(self._supervise, running, failure)
                        except KernelError as exc:
                            failure.append(exc)
                            self._stop.set()
                            break
                    else:
                        self.startup_seconds = time.perf_counter() - begin
                        log.info(
                            "node %s (%s): all %d modules started in %.2f s",
                            self.profile.node_name,
                            self.profile.role,
                            len(self.modules),
                            self.startup_seconds,
                        )
                        self.started.set()
                        task_status.started(self)
                    await self._stop.wait()
                    await self._shutdown()
                    nursery.cancel_scope.cancel()
        finally:
            self.ctx.close()
        # Raised here, outside the loop's nurseries, so callers see the error itself, not a group.
        if failure:
            raise failure[0]

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if self._stop.is_set():
                    log.warning("second %s: stopping now", signal.Signals(signum).name)
                    for running in self._running:
                        running.scope.cancel()
                    return
                log.info("%s: stopping node %s", signal.Signals(signum).name, self.profile.node_name)
                self._stop.set()

    async def _shutdown(self) -> None:
        deadline = trio.current_time() + self.profile.shutdown_timeout
        for running in reversed(self._running):
            running.scope.cancel()
            with trio.move_on_at(deadline):
                await running.done.wait()
            if not running.done.is_set():
                log.warning("module %r did not stop within the shutdown deadline", running.module.name)
        for running in self._running:
            self.ctx.states[running.module.name] = "stopped"

    async def _supervise(
        self, running: _Running, failure: list[KernelError], *, task_status: trio.TaskStatus[None]
    ) -> None:
        module = running.module
        name = module.name
        policy = getattr(module, "on_failure", "restart")
        backoff = BACKOFF_START
        first = True
        try:
            with running.scope:
                while True:
                    began = trio.current_time()
                    self.ctx.states[name] = "starting"
                    try:
                        async with trio.open_nursery() as inner:
                            await inner.start(module.run, self.ctx)
                            self.ctx.states[name] = "running"
                            if first:
                                first = False
                                task_status.started()
                        log.info("module %s finished", name)
                        self.ctx.states[name] = "finished"
                        return
                    except Exception as exc:  # trio.Cancelled is a BaseException and passes through
                        error = _first_error(exc)
                        if first:
                            self.ctx.states[name] = "failed"
                            raise ModuleFailed(name, error, starting=True) from None
                        if policy == "stop":
                            self.ctx.states[name] = "failed"
                            log.error("module %s failed, stopping the node: %s", name, error)
                            failure.append(ModuleFailed(name, error, starting=False))
                            self._stop.set()
                            return
                        if trio.current_time() - began > STABLE_AFTER:
                            backoff = BACKOFF_START
                        self.ctx.states[name] = "restarting"
                        log.error(
                            "module %s failed (%s: %s); restarting in %.0f s",
                            name,
                            type(error).__name__,
                            error,
                            backoff,
                        )
                        await trio.sleep(backoff)
                        backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            running.done.set()


def _first_error(exc: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        if not inner:
            break
        exc = inner[0]
    return exc


def _log_asyncio_error(loop: Any, context: dict[str, Any]) -> None:
    # trio-asyncio's default handler re-raises into the loop's nursery and takes the whole node down;
    # an asyncio library's stray error is worth a log line, not an outage.
    exc = context.get("exception")
    log.error("asyncio: %s%s", context.get("message", "error"), f" ({type(exc).__name__}: {exc})" if exc else "")

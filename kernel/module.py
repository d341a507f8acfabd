"""The module contract and the context every module runs with.

A module is any object with ``name``, ``group`` and ``async def run(ctx, *, task_status)``; it calls
``task_status.started()`` only once it serves. Optional attributes: ``after`` (names of modules that must be
started first when they are loaded too) and ``on_failure`` (``"restart"``: restart with backoff from 1 s
doubling to 30 s; ``"stop"``: stop the node).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import trio

from .bus import Bus
from .message import Message
from .metrics import Metrics

if TYPE_CHECKING:
    from .profile import Profile
    from .registry import Plugins
    from .storage import Database

__all__ = ["BaseModule", "Context", "Module"]

FailurePolicy = Literal["restart", "stop"]


@runtime_checkable
class Module(Protocol):
    name: str
    group: str

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None: ...


class BaseModule:
    """Convenience base: defaults for the optional attributes and the module's config."""

    name: str = ""
    group: str = ""
    after: Sequence[str] = ()
    on_failure: FailurePolicy = "restart"

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config: dict[str, Any] = dict(config or {})
        if not self.group:
            self.group = self.name

    async def run(self, ctx: Context, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        raise NotImplementedError


@dataclass
class Context:
    """What a running module may use: the bus, its node, the node's database, the plugin hooks."""

    bus: Bus
    profile: Profile
    plugins: Plugins
    states: dict[str, str] = field(default_factory=dict)
    metrics: Metrics = field(default_factory=Metrics)
    _database: Database | None = None

    @property
    def node_name(self) -> str:
        return self.profile.node_name

    @property
    def role(self) -> str:
        return self.profile.role

    @property
    def data_dir(self) -> Path:
        return self.profile.data_dir

    def database(self) -> Database:
        """The node's one SQLite database (opened on first use, in ``data_dir``)."""
        if self._database is None:
            from .storage import Database

            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._database = Database(self.data_dir / "kubeedge.db")
        return self._database

    def close(self) -> None:
        if self._database is not None:
            self._database.close()
            self._database = None

    # Short names for the bus calls modules make all the time.
    async def send(self, module: str, message: Message) -> None:
        await self.bus.send(module, message)

    async def receive(self, module: str) -> Message:
        return await self.bus.receive(module)

    async def send_sync(self, module: str, message: Message, timeout: float = 30.0) -> Message:  # noqa: ASYNC109
        return await self.bus.send_sync(module, message, timeout)

    def send_resp(self, message: Message) -> bool:
        return self.bus.send_resp(message)

    async def send_to_group(self, group: str, message: Message) -> None:
        await self.bus.send_to_group(group, message)

    async def send_to_group_sync(self, group: str, message: Message, timeout: float = 30.0) -> list[Message]:  # noqa: ASYNC109
        return await self.bus.send_to_group_sync(group, message, timeout)

"""The node's one SQLite database (peewee, WAL), used from trio without blocking it.

Every call to :meth:`Database.run` is one complete ``db.atomic()`` unit executed off the trio thread, one
at a time, on one connection: a transaction can never leak from one call into the next (the trap of
peewee's per-thread connections under trio's thread cache).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import trio

__all__ = ["Database"]

T = TypeVar("T")

PRAGMAS = {"journal_mode": "wal", "synchronous": "normal", "busy_timeout": 5000, "foreign_keys": 1}


class Database:
    def __init__(self, path: Path | str) -> None:
        import peewee  # imported here: a node that stores nothing never pays for it

        self.path = Path(path)
        self.peewee = peewee.SqliteDatabase(str(self.path), pragmas=PRAGMAS, thread_safe=False, check_same_thread=False)
        self._limiter: trio.CapacityLimiter | None = None

    def bind(self, models: Iterable[Any]) -> None:
        """Bind peewee models to this database and create their tables (safe to repeat)."""
        models = list(models)
        self.peewee.bind(models, bind_refs=False, bind_backrefs=False)
        with self.peewee.connection_context():
            self.peewee.create_tables(models, safe=True)

    def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` as one transaction on the calling thread (for start-up code and CLIs)."""
        with self.peewee.atomic():
            return fn(*args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` inside one transaction on the database thread and return its result."""
        if self._limiter is None:
            self._limiter = trio.CapacityLimiter(1)
        return await trio.to_thread.run_sync(self.run_blocking, fn, *args, limiter=self._limiter)

    def close(self) -> None:
        if not self.peewee.is_closed():
            self.peewee.close()

"""ObjectSync / ClusterObjectSync records: the newest version of each object an edge has acknowledged.

A record is named ``<node>.<uid>`` (KubeEdge's naming). cloudhub reads them synchronously from a memory
cache (every message it queues is checked against them) and writes them in small batches on the
database thread. :class:`SyncRecords` is the interface; :class:`SqliteSyncRecords` keeps them in the
cloud's SQLite database until the embedded API can hold them as real CRD objects.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

import trio

if TYPE_CHECKING:
    from kubeedge.storage import Database

log = logging.getLogger("kubeedge.cloudhub.records")

FLUSH_INTERVAL = 0.2


@dataclass(slots=True)
class SyncRecord:
    node: str
    uid: str
    resource: str  # the edge-side resource, "<ns>/<type>/<name>"
    kind: str
    namespace: str  # "" for a ClusterObjectSync
    object_name: str
    api_version: str
    resource_version: str

    @property
    def name(self) -> str:
        return f"{self.node}.{self.uid}"

    @property
    def record_kind(self) -> str:
        return "ObjectSync" if self.namespace else "ClusterObjectSync"

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data["name"] = self.name
        data["recordKind"] = self.record_kind
        return data


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as resourceVersion ``a`` is older, equal or newer than ``b`` (numeric when both are)."""
    if a == b:
        return 0
    if a.isdigit() and b.isdigit():
        return (int(a) > int(b)) - (int(a) < int(b))
    return 1  # versions that cannot be ordered: the later message wins


class SyncRecords(Protocol):
    """Where acknowledged versions live. Reads are synchronous (from a cache), writes asynchronous."""

    def get(self, node: str, uid: str) -> SyncRecord | None: ...

    def list(self, node: str | None = None) -> list[SyncRecord]: ...

    def put(self, record: SyncRecord) -> None: ...

    def remove(self, node: str, uid: str) -> None: ...

    def remove_node(self, node: str) -> int: ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None: ...

    async def flush(self) -> None: ...


class SqliteSyncRecords:
    """Records in the cloud node's SQLite database, cached in memory, written in batches."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, SyncRecord] = {}
        self._dirty: dict[str, SyncRecord | None] = {}
        self._dropped_nodes: set[str] = set()
        self._wake = trio.Event()
        self._model: Any = None

    # -- reads ------------------------------------------------------------------------------------------

    def get(self, node: str, uid: str) -> SyncRecord | None:
        return self._cache.get(f"{node}.{uid}")

    def list(self, node: str | None = None) -> list[SyncRecord]:
        return [r for r in self._cache.values() if node is None or r.node == node]

    # -- writes -----------------------------------------------------------------------------------------

    def put(self, record: SyncRecord) -> None:
        old = self._cache.get(record.name)
        if old is not None and compare_versions(record.resource_version, old.resource_version) < 0:
            return  # never record an older acknowledgement over a newer one
        self._cache[record.name] = record
        self._dirty[record.name] = record
        self._wake.set()

    def remove(self, node: str, uid: str) -> None:
        name = f"{node}.{uid}"
        self._cache.pop(name, None)
        self._dirty[name] = None
        self._wake.set()

    def remove_node(self, node: str) -> int:
        names = [name for name, r in self._cache.items() if r.node == node]
        for name in names:
            del self._cache[name]
            self._dirty.pop(name, None)
        self._dropped_nodes.add(node)
        self._wake.set()
        return len(names)

    # -- the writer -------------------------------------------------------------------------------------

    def _open(self) -> None:
        import peewee

        class ObjectSyncRow(peewee.Model):
            name = peewee.CharField(primary_key=True)
            node = peewee.CharField(index=True)
            uid = peewee.CharField()
            resource = peewee.CharField()
            kind = peewee.CharField()
            namespace = peewee.CharField()
            object_name = peewee.CharField()
            api_version = peewee.CharField()
            resource_version = peewee.CharField()

            class Meta:
                table_name = "objectsync"

        self.db.bind([ObjectSyncRow])
        self._model = ObjectSyncRow

    async def load(self) -> None:
        await trio.to_thread.run_sync(self._open)
        model = self._model

        def read() -> list[SyncRecord]:
            return [
                SyncRecord(
                    node=row.node,
                    uid=row.uid,
                    resource=row.resource,
                    kind=row.kind,
                    namespace=row.namespace,
                    object_name=row.object_name,
                    api_version=row.api_version,
                    resource_version=row.resource_version,
                )
                for row in model.select()
            ]

        for record in await self.db.run(read):
            self._cache[record.name] = record
        log.info("loaded %d ObjectSync records", len(self._cache))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.load()
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                await self.flush()
                await trio.sleep(FLUSH_INTERVAL)  # let acknowledgements gather into one transaction
        finally:
            with trio.CancelScope(shield=True):
                await self.flush()

    async def flush(self) -> None:
        if not self._dirty and not self._dropped_nodes:
            return
        dirty, self._dirty = self._dirty, {}
        dropped, self._dropped_nodes = self._dropped_nodes, set()
        model = self._model

        database = self.db.peewee
        columns = (
            "name",
            "node",
            "uid",
            "resource",
            "kind",
            "namespace",
            "object_name",
            "api_version",
            "resource_version",
        )
        upsert_sql = (
            f"INSERT OR REPLACE INTO objectsync ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        )

        def write() -> None:
            for node in dropped:
                model.delete().where(model.node == node).execute()
            deletes = [(name,) for name, r in dirty.items() if r is None]
            upserts = [
                (name, r.node, r.uid, r.resource, r.kind, r.namespace, r.object_name, r.api_version, r.resource_version)
                for name, r in dirty.items()
                if r is not None
            ]
            # plain executemany: building peewee queries for thousands of ACKs a second costs more than SQLite
            cursor = database.cursor()
            if deletes:
                cursor.executemany("DELETE FROM objectsync WHERE name = ?", deletes)
            if upserts:
                cursor.executemany(upsert_sql, upserts)

        await self.db.run(write)

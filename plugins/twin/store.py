"""The twin's tables (device, device attribute, device twin) in the node's SQLite database, via peewee.

The twin module keeps every device in memory and writes changes here in batches (one transaction per
batch, on the database thread). Models are built per store so two nodes in one process never share a
binding.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .protocol import Attribute, Device, Twin

__all__ = ["TwinStore"]


def _models() -> tuple[Any, Any, Any]:
    import peewee

    class DeviceRow(peewee.Model):
        id = peewee.CharField(primary_key=True, max_length=512)
        name = peewee.CharField(max_length=512)
        description = peewee.TextField(default="")
        state = peewee.CharField(default="unknown", max_length=32)
        last_online = peewee.CharField(default="", max_length=64)
        state_synced = peewee.BooleanField(default=True)
        # The Device and DeviceModel objects the cloud sent with the membership (JSON, "" when none), so
        # mappers can learn a device from membership/get even while the cloud is away.
        spec = peewee.TextField(default="")

        class Meta:
            table_name = "twin_device"

    class AttributeRow(peewee.Model):
        device = peewee.CharField(max_length=512, index=True)
        name = peewee.CharField(max_length=128)
        value = peewee.TextField(default="")
        optional = peewee.BooleanField(default=True)
        type = peewee.CharField(default="string", max_length=64)

        class Meta:
            table_name = "twin_device_attr"
            primary_key = peewee.CompositeKey("device", "name")

    class TwinRow(peewee.Model):
        device = peewee.CharField(max_length=512, index=True)
        name = peewee.CharField(max_length=128)
        expected = peewee.TextField(null=True)
        expected_ts = peewee.BigIntegerField(default=0)
        actual = peewee.TextField(null=True)
        actual_ts = peewee.BigIntegerField(default=0)
        optional = peewee.BooleanField(default=True)
        type = peewee.CharField(default="string", max_length=64)
        synced = peewee.BooleanField(default=True)

        class Meta:
            table_name = "twin_device_twin"
            primary_key = peewee.CompositeKey("device", "name")

    return DeviceRow, AttributeRow, TwinRow


class TwinStore:
    def __init__(self) -> None:
        self.Device, self.Attribute, self.Twin = _models()

    def create(self, peewee_database: Any) -> None:
        """Bind the models and create the tables (run inside ``database.run``: one connection, one thread)."""
        models = [self.Device, self.Attribute, self.Twin]
        peewee_database.bind(models, bind_refs=False, bind_backrefs=False)
        peewee_database.create_tables(models, safe=True)
        columns = {c.name for c in peewee_database.get_columns("twin_device")}
        if "spec" not in columns:  # a store written before the column existed
            peewee_database.execute_sql("ALTER TABLE twin_device ADD COLUMN spec TEXT NOT NULL DEFAULT ''")

    def load(self) -> dict[str, Device]:
        """Every stored device with its attributes and twins (run inside ``database.run``)."""
        devices: dict[str, Device] = {}
        for row in self.Device.select():
            devices[row.id] = Device(
                id=row.id,
                name=row.name,
                description=row.description,
                state=row.state,
                last_online=row.last_online,
                state_synced=row.state_synced,
                spec=json.loads(row.spec) if row.spec else {},
            )
        for row in self.Attribute.select():
            if row.device in devices:
                devices[row.device].attributes[row.name] = Attribute(row.value, row.optional, row.type)
        for row in self.Twin.select():
            if row.device in devices:
                devices[row.device].twins[row.name] = Twin(
                    expected=row.expected,
                    expected_ts=row.expected_ts,
                    actual=row.actual,
                    actual_ts=row.actual_ts,
                    optional=row.optional,
                    type=row.type,
                    synced=row.synced,
                )
        return devices

    def write(self, devices: Iterable[Device], removed: Iterable[str]) -> None:
        """Replace the rows of ``devices`` (whole devices) and delete ``removed`` (run inside ``database.run``)."""
        for device_id in removed:
            self._delete(device_id)
        device_rows: list[dict[str, Any]] = []
        attribute_rows: list[dict[str, Any]] = []
        twin_rows: list[dict[str, Any]] = []
        ids: list[str] = []
        for device in devices:
            ids.append(device.id)
            device_rows.append(
                {
                    "id": device.id,
                    "name": device.name,
                    "description": device.description,
                    "state": device.state,
                    "last_online": device.last_online,
                    "state_synced": device.state_synced,
                    "spec": json.dumps(device.spec) if device.spec else "",
                }
            )
            for name, attr in device.attributes.items():
                attribute_rows.append(
                    {
                        "device": device.id,
                        "name": name,
                        "value": attr.value,
                        "optional": attr.optional,
                        "type": attr.type,
                    }
                )
            for name, twin in device.twins.items():
                twin_rows.append(
                    {
                        "device": device.id,
                        "name": name,
                        "expected": twin.expected,
                        "expected_ts": twin.expected_ts,
                        "actual": twin.actual,
                        "actual_ts": twin.actual_ts,
                        "optional": twin.optional,
                        "type": twin.type,
                        "synced": twin.synced,
                    }
                )
        if not ids:
            return
        for chunk in _chunks(ids, 200):
            self.Attribute.delete().where(self.Attribute.device.in_(chunk)).execute()
            self.Twin.delete().where(self.Twin.device.in_(chunk)).execute()
        for model, rows in ((self.Device, device_rows), (self.Attribute, attribute_rows), (self.Twin, twin_rows)):
            for chunk in _chunks(rows, 100):
                model.insert_many(chunk).on_conflict_replace().execute()

    def _delete(self, device_id: str) -> None:
        self.Twin.delete().where(self.Twin.device == device_id).execute()
        self.Attribute.delete().where(self.Attribute.device == device_id).execute()
        self.Device.delete().where(self.Device.id == device_id).execute()


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]

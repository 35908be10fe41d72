"""The device registry: named queries returning typed records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from devices.kinds import DeviceKind, all_kinds
from storage.errors import DuplicateDevice

_COLUMNS = (
    "id, kind, label, lat, lon, group_name, attributes, status, created_at, updated_at, "
    "decommissioned_at, dev_eui, wmbus_id, decoder, tenant"
)
# Reads and writes on behalf of an API caller take `tenant`: None is an admin (every
# tenant); otherwise a device of another tenant is treated exactly as a missing one.


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    id: str
    kind: DeviceKind
    label: str
    lat: float | None
    lon: float | None
    group: str | None
    attributes: dict[str, Any]
    status: str
    created_at: datetime
    updated_at: datetime
    decommissioned_at: datetime | None
    dev_eui: str | None = None
    wmbus_id: str | None = None
    decoder: str | None = None
    tenant: str = "default"

    @property
    def active(self) -> bool:
        return self.status == "active"


def _record(row: asyncpg.Record) -> DeviceRecord:
    return DeviceRecord(
        id=row["id"],
        kind=DeviceKind(row["kind"]),
        label=row["label"],
        lat=row["lat"],
        lon=row["lon"],
        group=row["group_name"],
        attributes=row["attributes"],
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        decommissioned_at=row["decommissioned_at"],
        dev_eui=row["dev_eui"],
        wmbus_id=row["wmbus_id"],
        decoder=row["decoder"],
        tenant=row["tenant"],
    )


@dataclass(frozen=True, slots=True)
class NewDevice:
    id: str
    kind: DeviceKind
    label: str
    lat: float | None
    lon: float | None
    group: str | None
    attributes: dict[str, Any]
    dev_eui: str | None = None
    wmbus_id: str | None = None
    decoder: str | None = None
    tenant: str = "default"

    def params(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.kind.value,
            self.label,
            self.lat,
            self.lon,
            self.group,
            self.attributes,
            self.dev_eui,
            self.wmbus_id,
            self.decoder,
            self.tenant,
        )


_INSERT = f"""
    INSERT INTO devices
        (id, kind, label, lat, lon, group_name, attributes, dev_eui, wmbus_id, decoder, tenant)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
    RETURNING {_COLUMNS}
"""


# What a tenant's caller is told when an identity is taken: the same whether its own tenant or
# another holds it, so that registering cannot be used to learn what other tenants have.
UNAVAILABLE = "{field} {value} is not available"


def _conflict(
    exc: asyncpg.UniqueViolationError, dev: NewDevice, *, discreet: bool = False
) -> DuplicateDevice:
    constraint = exc.constraint_name or ""
    if discreet:
        if "dev_eui" in constraint:
            return DuplicateDevice(UNAVAILABLE.format(field="dev_eui", value=dev.dev_eui))
        if "wmbus_id" in constraint:
            return DuplicateDevice(UNAVAILABLE.format(field="wmbus_id", value=dev.wmbus_id))
        return DuplicateDevice(UNAVAILABLE.format(field="id", value=repr(dev.id)))
    if "dev_eui" in constraint:
        return DuplicateDevice(f"dev_eui {dev.dev_eui} is already bound to another device")
    if "wmbus_id" in constraint:
        return DuplicateDevice(f"wmbus_id {dev.wmbus_id} is already bound to another device")
    return DuplicateDevice(f"device {dev.id!r} is already registered")


async def create_device(
    conn: asyncpg.Connection | asyncpg.Pool, dev: NewDevice, *, discreet: bool = False
) -> DeviceRecord:
    """`discreet`: conflicts say "not available", never whose the identity is."""
    try:
        row = await conn.fetchrow(_INSERT, *dev.params())
    except asyncpg.UniqueViolationError as exc:
        raise _conflict(exc, dev, discreet=discreet) from exc
    assert row is not None
    return _record(row)


async def create_devices(
    conn: asyncpg.Connection, devs: Sequence[NewDevice], *, discreet: bool = False
) -> list[tuple[int, DeviceRecord | DuplicateDevice]]:
    """Create each device in its own savepoint, in one transaction.

    Returns, for each input index, the new record or the conflict that kept it out, so a bulk
    import reports exactly which rows were refused and creates nothing twice.
    """
    out: list[tuple[int, DeviceRecord | DuplicateDevice]] = []
    async with conn.transaction():
        for i, dev in enumerate(devs):
            try:
                async with conn.transaction():
                    row = await conn.fetchrow(_INSERT, *dev.params())
            except asyncpg.UniqueViolationError as exc:
                out.append((i, _conflict(exc, dev, discreet=discreet)))
                continue
            assert row is not None
            out.append((i, _record(row)))
    return out


async def get_device(
    conn: asyncpg.Connection | asyncpg.Pool, device_id: str, *, tenant: str | None = None
) -> DeviceRecord | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM devices WHERE id = $1 AND ($2::text IS NULL OR tenant = $2) "
        "AND kind = ANY($3::text[])",
        device_id,
        tenant,
        _declared(),
    )
    return _record(row) if row else None


def _declared() -> list[str]:
    # Lookups see only devices of kinds this process declares: a device of a kind whose module
    # it does not load is an unknown device to the ingest and a 404 to the API, not a crash.
    return [k.value for k in all_kinds()]


async def get_devices(
    conn: asyncpg.Connection | asyncpg.Pool,
    ids: Sequence[str] = (),
    *,
    dev_euis: Sequence[str] = (),
    wmbus_ids: Sequence[str] = (),
) -> list[DeviceRecord]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM devices WHERE (id = ANY($1::text[]) "
        "OR dev_eui = ANY($2::text[]) OR wmbus_id = ANY($3::text[])) AND kind = ANY($4::text[])",
        list(ids),
        list(dev_euis),
        list(wmbus_ids),
        _declared(),
    )
    return [_record(r) for r in rows]


async def devices_changed_since(
    conn: asyncpg.Connection | asyncpg.Pool,
    since: datetime,
    *,
    after: tuple[datetime, str] | None = None,
    limit: int | None = None,
) -> list[DeviceRecord]:
    """Devices updated at or after `since`, in (updated_at, id) order; a page of at most
    `limit` of them, following the (updated_at, id) of the last one of the previous page."""
    after_ts, after_id = after if after is not None else (None, "")
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM devices WHERE updated_at >= $1 "
        "AND ($2::timestamptz IS NULL OR (updated_at, id) > ($2, $3)) "
        "AND kind = ANY($5::text[]) ORDER BY updated_at, id LIMIT $4",
        since,
        after_ts,
        after_id,
        limit,
        _declared(),
    )
    return [_record(r) for r in rows]


async def list_devices(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    kind: DeviceKind | None = None,
    group: str | None = None,
    status: str | None = None,
    after_id: str | None = None,
    limit: int = 100,
    tenant: str | None = None,
) -> list[DeviceRecord]:
    """Keyset pagination by id: stable under concurrent inserts, unlike OFFSET."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM devices
        WHERE ($1::text IS NULL OR kind = $1)
          AND ($2::text IS NULL OR group_name = $2)
          AND ($3::text IS NULL OR status = $3)
          AND ($4::text IS NULL OR id > $4)
          AND ($6::text IS NULL OR tenant = $6)
          AND kind = ANY($7::text[])
        ORDER BY id
        LIMIT $5
        """,
        kind.value if kind else None,
        group,
        status,
        after_id,
        limit,
        tenant,
        _declared(),
    )
    return [_record(r) for r in rows]


async def update_device(
    conn: asyncpg.Connection | asyncpg.Pool,
    device_id: str,
    *,
    label: str,
    lat: float | None,
    lon: float | None,
    group: str | None,
    attributes: dict[str, Any],
    status: str,
    dev_eui: str | None,
    wmbus_id: str | None,
    decoder: str | None,
    tenant: str | None = None,
) -> DeviceRecord | None:
    try:
        row = await conn.fetchrow(
            f"""
            UPDATE devices
            SET label = $2, lat = $3, lon = $4, group_name = $5, attributes = $6, status = $7,
                decommissioned_at = CASE WHEN $7 = 'decommissioned'
                                         THEN coalesce(decommissioned_at, now()) END,
                dev_eui = $8, wmbus_id = $9, decoder = $10,
                updated_at = now()
            WHERE id = $1 AND ($11::text IS NULL OR tenant = $11)
            RETURNING {_COLUMNS}
            """,
            device_id,
            label,
            lat,
            lon,
            group,
            attributes,
            status,
            dev_eui,
            wmbus_id,
            decoder,
            tenant,
        )
    except asyncpg.UniqueViolationError as exc:
        probe = NewDevice(
            device_id, DeviceKind.WATER_METER, "", None, None, None, {}, dev_eui, wmbus_id, decoder
        )
        raise _conflict(exc, probe, discreet=tenant is not None) from exc
    return _record(row) if row else None


async def decommission_device(
    conn: asyncpg.Connection | asyncpg.Pool, device_id: str, *, tenant: str | None = None
) -> DeviceRecord | None:
    row = await conn.fetchrow(
        f"""
        UPDATE devices
        SET status = 'decommissioned', decommissioned_at = coalesce(decommissioned_at, now()),
            updated_at = now()
        WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)
        RETURNING {_COLUMNS}
        """,
        device_id,
        tenant,
    )
    return _record(row) if row else None

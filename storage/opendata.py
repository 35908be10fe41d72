"""Open data: the queries behind the public `/open/` endpoints (docs/open-data.md).

Every query takes the tenants that publish the dataset and selects only their devices, so a
public request can never read another tenant's rows. The water query aggregates per tenant and
district inside the database and drops districts with fewer meters than the threshold there:
no per-meter value ever leaves PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypeAlias

import asyncpg

Db: TypeAlias = asyncpg.Connection | asyncpg.Pool
Dataset = Literal["parking", "waste", "water"]
DATASETS: tuple[Dataset, ...] = ("parking", "waste", "water")


@dataclass(frozen=True, slots=True)
class PublishedTenant:
    id: str
    name: str
    datasets: tuple[Dataset, ...]


async def publishing_tenants(db: Db, dataset: Dataset | None = None) -> list[PublishedTenant]:
    """Tenants publishing `dataset` (None: at least one dataset), by id."""
    rows = await db.fetch(
        "SELECT id, name, open_data FROM tenants "
        "WHERE CASE WHEN $1::text IS NULL "
        "THEN open_data @> '{\"parking\": true}' OR open_data @> '{\"waste\": true}' "
        "OR open_data @> '{\"water\": true}' "
        "ELSE open_data -> $1::text = 'true'::jsonb END "
        "ORDER BY id",
        dataset,
    )
    out = []
    for r in rows:
        flags = r["open_data"]
        out.append(
            PublishedTenant(r["id"], r["name"], tuple(d for d in DATASETS if flags.get(d) is True))
        )
    return out


@dataclass(frozen=True, slots=True)
class ParkingZone:
    tenant: str
    zone: str
    total: int
    free: int
    occupied: int
    unknown: int
    updated_at: datetime | None
    lat: float | None  # centroid of the zone's located spaces
    lon: float | None


async def parking_zones(
    db: Db, tenants: Sequence[str], default_fresh_s: float
) -> list[ParkingZone]:
    """Active spaces per (tenant, zone) now, judged like `storage.parking.zones_now`: free or
    occupied only when the newest reading is within the space's freshness window, else
    unknown."""
    rows = await db.fetch(
        """
        WITH spaces AS (
            SELECT d.id, d.tenant, d.attributes ->> 'zone' AS zone, d.lat, d.lon,
                   CASE WHEN jsonb_typeof(d.attributes -> 'freshness_s') = 'number'
                        THEN (d.attributes ->> 'freshness_s')::float8
                        ELSE $1::float8 END AS fresh_s
              FROM devices d
             WHERE d.kind = 'parking_sensor' AND d.status = 'active'
               AND d.attributes ->> 'zone' IS NOT NULL AND d.tenant = ANY($2::text[])
        ),
        judged AS (
            SELECT s.tenant, s.zone, s.lat, s.lon, l.ts, l.occupied,
                   l.ts IS NOT NULL AND l.ts > now() - make_interval(secs => s.fresh_s) AS fresh
              FROM spaces s
              LEFT JOIN LATERAL (
                  SELECT r.ts, r.occupied FROM parking_sensor_readings r
                   WHERE r.device_id = s.id ORDER BY r.ts DESC LIMIT 1) l ON true
        )
        SELECT tenant, zone,
               count(*) AS total,
               count(*) FILTER (WHERE fresh AND NOT occupied) AS free,
               count(*) FILTER (WHERE fresh AND occupied) AS occupied,
               max(ts) AS updated_at,
               avg(lat) AS lat, avg(lon) AS lon
          FROM judged
         GROUP BY tenant, zone
         ORDER BY tenant, zone
        """,
        default_fresh_s,
        list(tenants),
    )
    return [
        ParkingZone(
            tenant=r["tenant"],
            zone=r["zone"],
            total=r["total"],
            free=r["free"],
            occupied=r["occupied"],
            unknown=r["total"] - r["free"] - r["occupied"],
            updated_at=r["updated_at"],
            lat=r["lat"],
            lon=r["lon"],
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class WasteColumn:
    tenant: str
    device_id: str
    lat: float
    lon: float
    stream: str | None
    fill_pct: float | None
    fill_ts: datetime | None
    last_reading_ts: datetime | None  # None: never heard from (no derived state yet)
    alarms: tuple[str, ...]
    threshold_pct: float | None
    eta_threshold: datetime | None
    last_emptied: datetime | None


async def waste_columns(db: Db, tenants: Sequence[str]) -> list[WasteColumn]:
    """Active, located waste columns of the tenants with their derived state (worker's `waste`
    job) when there is one. A column without coordinates is left out: the data model requires a
    location."""
    rows = await db.fetch(
        "SELECT d.tenant, d.id, d.lat, d.lon, d.attributes ->> 'waste_stream' AS stream, "
        "s.fill_pct, s.fill_ts, s.last_reading_ts, s.last_alarms, s.threshold_pct, "
        "s.eta_threshold, s.last_emptied "
        "FROM devices d LEFT JOIN waste_column_state s ON s.device_id = d.id "
        "WHERE d.kind = 'waste_column' AND d.status = 'active' AND d.lat IS NOT NULL "
        "AND d.tenant = ANY($1::text[]) ORDER BY d.tenant, d.id",
        list(tenants),
    )
    return [
        WasteColumn(
            tenant=r["tenant"],
            device_id=r["id"],
            lat=r["lat"],
            lon=r["lon"],
            stream=r["stream"],
            fill_pct=r["fill_pct"],
            fill_ts=r["fill_ts"],
            last_reading_ts=r["last_reading_ts"],
            alarms=tuple(r["last_alarms"] or ()),
            threshold_pct=r["threshold_pct"],
            eta_threshold=r["eta_threshold"],
            last_emptied=r["last_emptied"],
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class DistrictMonth:
    tenant: str
    district: str
    volume_m3: float
    meters: int  # the most meters with data in any hour of the month; never below the threshold
    first_hour: datetime
    last_hour: datetime  # start of the newest hour with data
    lat: float | None  # centroid of the district's located meters in the tenant
    lon: float | None


async def water_district_months(
    db: Db, tenants: Sequence[str], start: datetime, end: datetime, min_meters: int
) -> list[DistrictMonth]:
    """Consumption per (tenant, district) over [start, end), from the worker's hourly volumes.

    A district is counted by the most meters that had data in one of its hours (never more than
    the meters that contributed over the month: the conservative count for the threshold), and
    dropped in SQL when that is under `min_meters`.

    A district whose meters all belong to one tenant (the usual case: district names are a
    territory's own) is read from the worker's per-district rollup, `water_district_hourly`: a
    month is ~750 rows per district. A district name shared by meters of several tenants is
    summed per tenant from the per-meter hours of that district only, through the (district,
    hour) index. The tenant is each meter's current tenant.
    """
    if min_meters < 1:
        raise ValueError("min_meters must be positive")
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await _water_district_months(conn, tenants, start, end, min_meters)
    return await _water_district_months(db, tenants, start, end, min_meters)


async def _water_district_months(
    conn: asyncpg.Connection,
    tenants: Sequence[str],
    start: datetime,
    end: datetime,
    min_meters: int,
) -> list[DistrictMonth]:
    async with conn.transaction():
        # The per-meter branch is costed for every meter's month even when no district is
        # shared, which makes PostgreSQL JIT-compile the query: ~65 ms of compiling for a
        # query that runs in less.
        await conn.execute("SET LOCAL jit = off")
        rows = await conn.fetch(_WATER_SQL, start, end, list(tenants), min_meters)
    return [
        DistrictMonth(
            tenant=r["tenant"],
            district=r["district"],
            volume_m3=r["vol"],
            meters=r["meters"],
            first_hour=r["first_hour"],
            last_hour=r["last_hour"],
            lat=r["lat"],
            lon=r["lon"],
        )
        for r in rows
    ]


_WATER_SQL = """
        WITH meters AS (
            SELECT d.id, d.tenant, d.attributes ->> 'district' AS district, d.lat, d.lon
              FROM devices d
             WHERE d.kind = 'water_meter' AND d.attributes ->> 'district' IS NOT NULL
        ),
        districts AS (
            SELECT district, count(DISTINCT tenant) AS tenants
              FROM meters GROUP BY district
        ),
        places AS (
            SELECT tenant, district, avg(lat) AS lat, avg(lon) AS lon
              FROM meters WHERE tenant = ANY($3::text[]) GROUP BY tenant, district
        ),
        single AS (
            SELECT p.tenant, h.district, sum(h.volume_m3) AS vol, max(h.meters) AS meters,
                   min(h.hour) AS first_hour, max(h.hour) AS last_hour
              FROM places p
              JOIN districts x ON x.district = p.district AND x.tenants = 1
              JOIN water_district_hourly h ON h.district = p.district
             WHERE h.hour >= $1 AND h.hour < $2
             GROUP BY p.tenant, h.district
        ),
        shared_hours AS (
            SELECT m.tenant, h.district, h.hour, sum(h.volume_m3) AS vol, count(*) AS meters
              FROM districts x
              JOIN water_hourly h ON h.district = x.district
              JOIN meters m ON m.id = h.device_id
             WHERE x.tenants > 1 AND h.hour >= $1 AND h.hour < $2
               AND m.tenant = ANY($3::text[])
             GROUP BY m.tenant, h.district, h.hour
        ),
        shared AS (
            SELECT tenant, district, sum(vol) AS vol, max(meters) AS meters,
                   min(hour) AS first_hour, max(hour) AS last_hour
              FROM shared_hours GROUP BY tenant, district
        ),
        both_kinds AS (SELECT * FROM single UNION ALL SELECT * FROM shared)
        SELECT b.tenant, b.district, b.vol, b.meters, b.first_hour, b.last_hour, p.lat, p.lon
          FROM both_kinds b
          JOIN places p ON p.tenant = b.tenant AND p.district = b.district
         WHERE b.meters >= $4
         ORDER BY b.tenant, b.district
"""

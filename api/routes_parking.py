"""Parking: free places per zone now, occupancy history, and a short-term forecast."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, status
from pydantic import AwareDatetime, BaseModel, Field

from analytics import parking as pk
from api.authz import Permission, require
from api.deps import PoolDep, SettingsDep, TenantDep
from storage import parking as pq

router = APIRouter(prefix="/parking", tags=["parking"], dependencies=[require(Permission.READ)])

BUCKETS: dict[str, timedelta] = {
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
}
MAX_BUCKETS = 10_000
DEFAULT_RANGE = timedelta(hours=24)

ZonePath = Annotated[
    str, Path(min_length=1, max_length=64, description="Zone name (the spaces' `zone`)")
]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No space has this zone"}}


class ZoneAvailability(BaseModel):
    zone: str
    total: int = Field(description="Active spaces in the zone: free + occupied + unknown")
    free: int = Field(description="Spaces whose newest reading is fresh and says free")
    occupied: int
    unknown: int = Field(
        description="Spaces never heard from, or silent longer than their freshness window"
    )
    updated_at: datetime | None = Field(
        description="Device time of the newest reading among the zone's spaces (fresh or not)"
    )


class ZoneList(BaseModel):
    at: datetime
    items: list[ZoneAvailability]


class OccupancyBucket(BaseModel):
    start: datetime
    occupancy: float | None = Field(
        description="Occupied time / known time over the bucket, 0..1; null when no space "
        "had a known state"
    )
    free_avg: float = Field(description="Average number of free (fresh) spaces over the bucket")
    known_avg: float = Field(description="Average number of spaces with a known state")


class OccupancyHistory(BaseModel):
    zone: str
    bucket: str
    items: list[OccupancyBucket]


class ForecastSlot(BaseModel):
    start: datetime
    free_expected: float
    basis: Literal["nowcast", "profile_blend", "persistence"] = Field(
        description="nowcast: profile + decaying departure; profile_blend: no profile for the "
        "current slot, observation decaying into the profile; persistence: no profile at all"
    )


class Forecast(BaseModel):
    zone: str
    at: datetime
    observed_free: int
    total: int
    profile_days: dict[str, int] = Field(
        description="For the day types forecast (weekday, saturday, sunday_holiday), how many "
        "days of that type the profile is the median of (fewer than 3: the last days of any "
        "type stand in)"
    )
    items: list[ForecastSlot]


def _unprocessable(param: str, msg: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"loc": ["query", param], "msg": msg, "type": "value_error"}],
    )


async def _zone_or_404(pool: PoolDep, zone: str, tenant: str | None) -> None:
    if not await pq.zone_exists(pool, zone, tenant):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"zone {zone!r} not found")


async def _own_slots(
    pool: PoolDep, zone: str, tenant: str | None, lo: datetime, hi: datetime, fresh_s: float
) -> list[pk.SlotTotals] | None:
    """The zone's 5-minute slots over [lo, hi) counting the caller's spaces only, or None when
    the derived slots already are exactly that (an admin, or a zone no other tenant uses)."""
    if tenant is None or await pq.zone_tenants(pool, zone) <= {tenant}:
        return None
    a = float(math.floor(lo.timestamp() / pk.SLOT_S) * pk.SLOT_S)
    b = float(math.ceil(hi.timestamp() / pk.SLOT_S) * pk.SLOT_S)
    rng = pq.ZoneRange(zone, datetime.fromtimestamp(a, UTC), datetime.fromtimestamp(b, UTC))
    (spaces,) = await pq.zone_readings(pool, [rng], fresh_s, tenant)
    return pk.slot_seconds(spaces, a, b, pk.SLOT_S)


async def _zone_buckets(
    pool: PoolDep,
    zone: str,
    tenant: str | None,
    lo: datetime,
    hi: datetime,
    step: timedelta,
    fresh_s: float,
) -> list[pq.BucketTotals]:
    own = await _own_slots(pool, zone, tenant, lo, hi, fresh_s)
    if own is None:
        return await pq.zone_buckets(pool, zone, lo, hi, step)
    # Bucket widths divide a day, so UTC-epoch alignment is the table's 2000-01-01 alignment.
    width = step.total_seconds()
    sums: dict[float, list[float]] = {}
    for sl in own:
        acc = sums.setdefault(math.floor(sl.start / width) * width, [0.0, 0.0])
        acc[0] += sl.known_s
        acc[1] += sl.occupied_s
    return [
        pq.BucketTotals(datetime.fromtimestamp(k, UTC), v[0], v[1]) for k, v in sorted(sums.items())
    ]


async def _free_by_local_slot(
    pool: PoolDep,
    zone: str,
    tenant: str | None,
    days: list[tuple[datetime, datetime]],
    fresh_s: float,
) -> list[tuple[date, str, float]]:
    if tenant is None or await pq.zone_tenants(pool, zone) <= {tenant}:
        return await pq.zone_free_by_local_slot(pool, zone, days, pk.PARIS.key)
    out: list[tuple[date, str, float]] = []
    for lo, hi in days:
        own = await _own_slots(pool, zone, tenant, lo, hi, fresh_s) or []
        free: dict[float, float] = {}
        for sl in own:
            if lo.timestamp() <= sl.start < hi.timestamp():
                k = math.floor(sl.start / 900) * 900.0
                free[k] = free.get(k, 0.0) + sl.known_s - sl.occupied_s
        for k, f in sorted(free.items()):
            local = datetime.fromtimestamp(k, UTC).astimezone(pk.PARIS)
            out.append((local.date(), local.strftime("%H:%M"), f / 900.0))
    return out


@router.get(
    "/zones",
    response_model=ZoneList,
    summary="Free, occupied and unknown spaces per zone, now",
    description="Active parking sensors grouped by their `zone` attribute; decommissioned "
    "spaces are not counted. A space is unknown when it was never heard from or its newest "
    "reading (device time) is older than its freshness window (`freshness_s` attribute, "
    "default TERRITORY_PARKING_FRESHNESS_S = 6.5 h). `at` asks the same question about a past "
    "instant.",
)
async def list_zones(
    pool: PoolDep,
    settings: SettingsDep,
    tenant: TenantDep,
    at: Annotated[AwareDatetime | None, Query(description="Default: now")] = None,
) -> ZoneList:
    rows = await pq.zones_now(pool, settings.parking_freshness_s, at, tenant=tenant)
    return ZoneList(
        at=at or datetime.now(UTC),
        items=[
            ZoneAvailability(
                zone=z.zone,
                total=z.total,
                free=z.free,
                occupied=z.occupied,
                unknown=z.unknown,
                updated_at=z.updated_at,
            )
            for z in rows
        ],
    )


@router.get(
    "/zones/{zone}/occupancy",
    response_model=OccupancyHistory,
    responses=NOT_FOUND,
    summary="Time-weighted occupancy of a zone per bucket",
    description="Each reading's state lasts until the space's next reading, at most its "
    "freshness window (then the space is unknown); states are clipped to each bucket. "
    "occupancy = occupied time / known time; free_avg = average number of free, fresh spaces. "
    "Buckets 5m, 15m or 1h, aligned on UTC (and so on Europe/Paris) boundaries: `start` is "
    "rounded down and `end` up to a bucket boundary. Default range: the last 24 hours. Buckets "
    "up to now only; the current one counts the newest states up to its end. Computed by "
    "`territory worker`, so readings stored in the last seconds may not be in it yet.",
)
async def zone_occupancy(
    zone: ZonePath,
    pool: PoolDep,
    settings: SettingsDep,
    tenant: TenantDep,
    start: Annotated[AwareDatetime | None, Query(description="Default: end - 24 h")] = None,
    end: Annotated[AwareDatetime | None, Query(description="Default: now")] = None,
    bucket: Annotated[Literal["5m", "15m", "1h"], Query()] = "15m",
) -> OccupancyHistory:
    now = datetime.now(UTC)
    end_t = end or now
    try:
        start_t = start or end_t - DEFAULT_RANGE
    except OverflowError as exc:
        raise _unprocessable("end", "end is too early for a default start") from exc
    if start_t >= end_t:
        raise _unprocessable("start", "start must be before end")
    step = BUCKETS[bucket]
    step_s = step.total_seconds()
    lo = math.floor(start_t.timestamp() / step_s) * step_s
    hi = math.ceil(end_t.timestamp() / step_s) * step_s
    n = round((hi - lo) / step_s)
    if n > MAX_BUCKETS:
        raise _unprocessable(
            "start", f"the range holds {n} {bucket} buckets; at most {MAX_BUCKETS} per request"
        )
    try:
        lo_dt = datetime.fromtimestamp(lo, UTC)
        hi_dt = datetime.fromtimestamp(hi, UTC)
    except (OverflowError, ValueError, OSError) as exc:
        raise _unprocessable("end", "the range reaches beyond the representable dates") from exc
    await _zone_or_404(pool, zone, tenant)
    rows = {
        b.start: b
        for b in await _zone_buckets(
            pool, zone, tenant, lo_dt, hi_dt, step, settings.parking_freshness_s
        )
    }
    items = []
    for i in range(n):
        b_start = lo_dt + i * step
        if b_start > now:
            break
        row = rows.get(b_start)
        known = row.known_s if row else 0.0
        occ = row.occupied_s if row else 0.0
        items.append(
            OccupancyBucket(
                start=b_start,
                occupancy=min(1.0, occ / known) if known > 0 else None,
                free_avg=max(0.0, known - occ) / step_s,
                known_avg=known / step_s,
            )
        )
    return OccupancyHistory(zone=zone, bucket=bucket, items=items)


@router.get(
    "/zones/{zone}/forecast",
    response_model=Forecast,
    responses=NOT_FOUND,
    summary="Expected free places per 15 minutes over the next hours",
    description="Profile: per 15-minute slot of local time (Europe/Paris), the median number "
    "of free places over the last 8 days of the same type (weekday, Saturday, Sunday or French "
    "public holiday). Nowcast: profile(t+h) + (free now - profile(now)) * exp(-h / 60 min). With "
    "fewer than 3 same-type days the profile of the last 8 days of any type stands in; with no "
    "history the forecast is today's count (see `basis`).",
)
async def zone_forecast(
    zone: ZonePath,
    pool: PoolDep,
    settings: SettingsDep,
    tenant: TenantDep,
    horizon_min: Annotated[int, Query(ge=15, le=1440, description="Minutes ahead")] = 120,
) -> Forecast:
    await _zone_or_404(pool, zone, tenant)
    now = datetime.now(UTC)
    counts = await pq.zones_now(pool, settings.parking_freshness_s, None, zone, tenant)
    observed = counts[0].free if counts else 0
    total = counts[0].total if counts else 0
    today = pk.local_slot(now)[0]
    history = await _free_history(
        pool, zone, now, horizon_min, tenant, settings.parking_freshness_s
    )
    profile = pk.build_profile(history, today)
    points = pk.forecast(profile, observed, now, horizon_min, capacity=total)
    return Forecast(
        zone=zone,
        at=now,
        observed_free=observed,
        total=total,
        profile_days={
            t: profile.days_used[t]
            for t in sorted(
                {pk.day_type(today)} | {pk.day_type(pk.local_slot(p.start)[0]) for p in points}
            )
        },
        items=[
            ForecastSlot(start=p.start, free_expected=p.free_expected, basis=p.basis)
            for p in points
        ],
    )


async def _free_history(
    pool: PoolDep, zone: str, now: datetime, horizon_min: int, tenant: str | None, fresh_s: float
) -> dict[date, dict[str, float]]:
    today = pk.local_slot(now)[0]
    last = pk.local_slot(now + timedelta(minutes=horizon_min))[0]
    days = [pk.local_day_bounds(d) for d in pk.profile_candidate_days(today, last)]
    return pk.history_by_local_slot(await _free_by_local_slot(pool, zone, tenant, days, fresh_s))

"""Water: consumption per meter and per district, leak list, declared index resets."""

from __future__ import annotations

import bisect
import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from analytics import water as wa
from api.authz import Permission, require
from api.deps import PoolDep, TenantDep, get_settings
from api.schemas import DEVICE_ID_PATTERN
from storage import water as ws
from territory.config import Settings

router = APIRouter(prefix="/water", tags=["water"])
READ = [require(Permission.READ)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

# Default span when start is not given: the last day of hours, month of days, year of months.
DEFAULT_SPAN = {"hour": 24, "day": 31, "month": 12}
MAX_BUCKETS = 10_000
# Beyond these, local-time arithmetic near datetime's limits would overflow; no meter reads there.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
# How far back the leak list looks for the run of nights (a longer run is reported as this).
LEAK_LOOKBACK_DAYS = 90


def _bad(param: str, message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"loc": ["query", param], "msg": message, "type": "value_error"}],
    )


def _zone(name: str, param: str = "tz") -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except Exception as exc:  # ZoneInfoNotFoundError, or ValueError for a malformed key
        raise _bad(
            param, f"unknown time zone {name!r} (an IANA name such as Europe/Paris)"
        ) from exc


class ConsumptionItem(BaseModel):
    start: datetime = Field(description="Bucket start, in `tz`, with its offset")
    volume_m3: float
    estimated: bool = Field(
        description="Some of the volume was spread over a gap of more than 6 h between readings"
    )
    meters: int = Field(
        description="Meters with data in the bucket (for a day or month: the most in any of its "
        "hours); 0 means no data, not no consumption"
    )


class ConsumptionOut(BaseModel):
    items: list[ConsumptionItem]


@router.get(
    "/consumption",
    response_model=ConsumptionOut,
    summary="Water consumption of a meter or of a district, per hour, local day or local month",
    description="Exactly one of `device_id` or `group` (a meter's `district` attribute: the "
    "sum of its meters). Days and months are local in `tz`; an hour is a UTC hour shown in "
    "`tz`. `start` is rounded down to its bucket; buckets starting before `end` are returned. "
    "Defaults: `end` is the end of the current bucket, `start` 24 hours, 31 days or 12 months "
    "before `end`.",
    responses={404: {"description": "Unknown meter or district"}},
    dependencies=READ,
)
async def consumption(
    pool: PoolDep,
    settings: SettingsDep,
    tenant: TenantDep,
    device_id: Annotated[str | None, Query(max_length=64)] = None,
    group: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    bucket: Literal["hour", "day", "month"] = "day",
    start: AwareDatetime | None = None,
    end: AwareDatetime | None = None,
    tz: Annotated[
        str | None, Query(max_length=64, description="IANA zone; default TERRITORY_WATER_TZ")
    ] = None,
) -> ConsumptionOut:
    if (device_id is None) == (group is None):
        raise _bad("device_id", "give exactly one of device_id or group")
    for name, value in (("start", start), ("end", end)):
        if value is not None and not EARLIEST <= value <= LATEST:
            raise _bad(name, f"{name} must lie between {EARLIEST.year} and {LATEST.year}")
    zone = _zone(tz or settings.water_tz)
    if end is None:
        end = wa.bucket_shift(wa.bucket_floor(datetime.now(UTC), bucket, zone), bucket, zone, 1)
    if start is None:
        start = wa.bucket_shift(
            wa.bucket_floor(end, bucket, zone), bucket, zone, -DEFAULT_SPAN[bucket]
        )
    if start.astimezone(UTC) >= end.astimezone(UTC):
        raise _bad("start", "start must be before end")
    try:
        edges = wa.bucket_edges(start, end, bucket, zone, MAX_BUCKETS)
    except wa.BucketError as exc:
        raise _bad(exc.param, str(exc)) from exc
    lo, hi = edges[0].astimezone(UTC), edges[-1].astimezone(UTC)
    if device_id is not None:
        if not re.match(DEVICE_ID_PATTERN, device_id) or not await ws.is_water_meter(
            pool, device_id, tenant
        ):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"water meter {device_id!r} not found")
        hours = await ws.meter_hours(pool, device_id, lo, hi)
    else:
        assert group is not None
        if not await ws.district_exists(pool, group, tenant):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"district {group!r} not found")
        hours = await ws.district_hours(pool, group, lo, hi, tenant)
    utc_edges = [e.astimezone(UTC) for e in edges]
    n = len(edges) - 1
    volume = [0.0] * n
    meters = [0] * n
    estimated = [False] * n
    for h in hours:
        i = bisect.bisect_right(utc_edges, h.hour) - 1
        if 0 <= i < n:
            volume[i] += h.volume_m3
            meters[i] = max(meters[i], h.meters)
            estimated[i] = estimated[i] or h.estimated
    return ConsumptionOut(
        items=[
            ConsumptionItem(
                start=edges[i].astimezone(zone),
                volume_m3=round(volume[i], 6),
                estimated=estimated[i],
                meters=meters[i],
            )
            for i in range(n)
        ]
    )


class LeakItem(BaseModel):
    device_id: str
    status: Literal["suspected", "leak", "burst"]
    night_min_lph: float | None = Field(
        description="Minimum hourly flow (L/h) of the night of `date` (02:00-05:00 local); "
        "null when that night was not fully measured"
    )
    nights: int = Field(
        description="Consecutive nights up to `date` whose minimum reached the suspected threshold"
    )
    since: datetime = Field(description="Start of the evidence for `status`")
    reasons: list[str] = Field(description="Which rules fired")


class LeaksOut(BaseModel):
    date: date
    items: list[LeakItem]


_RANK = {"burst": 0, "leak": 1, "suspected": 2}


@router.get(
    "/leaks",
    response_model=LeaksOut,
    summary="Meters with a suspected leak, a leak or a burst on a local day",
    description="Night minimum flow on consecutive nights, continuous flow over the day, a "
    "night minimum at burst flow, and the meter's own leak/burst alarm. Only hours whose "
    "readings are at most about an hour apart are judged (docs/water.md). `date`: a local day "
    "in the platform's water time zone, default today; `group`: a district, default all.",
    responses={404: {"description": "Unknown district"}},
    dependencies=READ,
)
async def leaks(
    pool: PoolDep,
    settings: SettingsDep,
    tenant: TenantDep,
    group: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    date_: Annotated[date | None, Query(alias="date")] = None,
) -> LeaksOut:
    zone = _zone(settings.water_tz)
    day = date_ or datetime.now(zone).date()
    if not EARLIEST.date() <= day <= LATEST.date():
        raise _bad("date", f"date must lie between {EARLIEST.year} and {LATEST.year}")
    if group is not None and not await ws.district_exists(pool, group, tenant):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"district {group!r} not found")
    t = wa.LeakThresholds(
        suspected_lph=settings.water_leak_suspected_lph,
        leak_lph=settings.water_leak_lph,
        nights=settings.water_leak_nights,
        burst_lph=settings.water_burst_lph,
    )
    candidates = await ws.leak_candidates(pool, day, group, t.suspected_lph, t.burst_lph, tenant)
    runs = await ws.night_runs(
        pool,
        [c.device_id for c in candidates if (c.night_min_lph or 0.0) >= t.suspected_lph],
        day,
        LEAK_LOOKBACK_DAYS,
        t.suspected_lph,
        t.leak_lph,
    )
    items: list[LeakItem] = []
    for c in candidates:
        today = wa.MeterDay(
            day_start=datetime(c.day.year, c.day.month, c.day.day, tzinfo=zone),
            night_start=c.night_start,
            night_min_lph=c.night_min_lph,
            max_hour_l=c.max_hour_l,
            max_hour_at=c.max_hour_at,
            continuous=c.continuous,
            leak_alarm_at=c.leak_alarm_at,
            burst_alarm_at=c.burst_alarm_at,
        )
        v = wa.judge(today, runs.get(c.device_id, wa.NightRun()), t)
        if v is None:
            continue
        items.append(
            LeakItem(
                device_id=c.device_id,
                status=v.status,
                night_min_lph=round(v.night_min_lph, 3) if v.night_min_lph is not None else None,
                nights=v.nights,
                since=v.since.astimezone(zone),
                reasons=list(v.reasons),
            )
        )
    items.sort(key=lambda i: (_RANK[i.status], i.device_id))
    return LeaksOut(date=day, items=items)


class IndexResetIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "at": "2026-03-10T09:30:00+01:00",
                    "old_final_index_m3": 1523.412,
                    "new_start_index_m3": 0.0,
                }
            ]
        },
    )
    at: AwareDatetime = Field(description="When the old register stopped and the new one started")
    old_final_index_m3: float | None = Field(
        default=None,
        ge=0,
        description="The old register's last index; unknown: nothing is counted between the "
        "last reading and `at`",
    )
    new_start_index_m3: float = Field(ge=0, description="The new register's index at `at`")


class IndexResetOut(BaseModel):
    device_id: str
    at: datetime
    old_final_index_m3: float | None
    new_start_index_m3: float
    stored_at: datetime


def _reset_out(r: ws.IndexResetRecord) -> IndexResetOut:
    return IndexResetOut(
        device_id=r.device_id,
        at=r.at,
        old_final_index_m3=r.old_final_index_m3,
        new_start_index_m3=r.new_start_index_m3,
        stored_at=r.stored_at,
    )


MeterPath = Annotated[str, Path(description="Water meter id", examples=["wm-quimper-0042"])]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No water meter with this id"}}


async def _meter_or_404(pool: PoolDep, device_id: str, tenant: TenantDep) -> None:
    """A route on one meter: the caller's tenant's meter, else the same 404 as a missing one."""
    if not re.match(DEVICE_ID_PATTERN, device_id) or not await ws.is_water_meter(
        pool, device_id, tenant
    ):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"water meter {device_id!r} not found")


@router.post(
    "/meters/{device_id}/index-resets",
    status_code=status.HTTP_201_CREATED,
    response_model=IndexResetOut,
    summary="Declare an index reset or a meter replacement behind the same device",
    description="Consumption across `at` becomes (old final - previous reading) + (next "
    "reading - new start), never a spike or a decrease; the worker recomputes the meter from "
    "the reading before `at`. A replacement under a new device id needs no declaration.",
    responses={**_NOT_FOUND, 409: {"description": "A reset is already declared at `at`"}},
    dependencies=[require(Permission.DEVICE_WRITE), Depends(_meter_or_404)],
)
async def add_index_reset(device_id: MeterPath, body: IndexResetIn, pool: PoolDep) -> IndexResetOut:
    rec = await ws.add_index_reset(
        pool, device_id, body.at, body.old_final_index_m3, body.new_start_index_m3
    )
    if rec is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"a reset is already declared at {body.at.isoformat()}"
        )
    return _reset_out(rec)


@router.get(
    "/meters/{device_id}/index-resets",
    response_model=list[IndexResetOut],
    summary="Declared index resets of a meter",
    responses=_NOT_FOUND,
    dependencies=[*READ, Depends(_meter_or_404)],
)
async def list_index_resets(device_id: MeterPath, pool: PoolDep) -> list[IndexResetOut]:
    return [_reset_out(r) for r in await ws.list_index_resets(pool, device_id)]


class AnomalyOut(BaseModel):
    ts: datetime = Field(description="The reading that ends the interval")
    kind: Literal["spike", "index_decrease", "rollover", "reset"]
    delta_m3: float = Field(
        description="The index change not counted as such: the excluded rise of a spike, the "
        "decrease, or the volume counted across a rollover or a declared reset"
    )


class AnomalyPage(BaseModel):
    items: list[AnomalyOut]


@router.get(
    "/meters/{device_id}/anomalies",
    response_model=AnomalyPage,
    summary="Intervals of a meter not counted as plain consumption, newest first",
    responses=_NOT_FOUND,
    dependencies=[*READ, Depends(_meter_or_404)],
)
async def anomalies(
    device_id: MeterPath,
    pool: PoolDep,
    start: AwareDatetime | None = None,
    end: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> AnomalyPage:
    rows = await ws.meter_anomalies(pool, device_id, start, end, limit)
    return AnomalyPage(items=[AnomalyOut(ts=r.ts, kind=r.kind, delta_m3=r.delta_m3) for r in rows])

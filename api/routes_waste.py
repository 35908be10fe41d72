"""Waste columns: fill forecasts, the crews' "emptied" confirmations and the daily collection
list (docs/waste.md). The answers come from what `territory worker` derived; a confirmation
reaches the forecasts at the worker's next run (seconds)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from analytics.waste import (
    LIST_ALARMS,
    MIN_LIST_FILL_PCT,
    TZ,
    ListCandidate,
    due_horizon,
    list_reason,
    local_midnight,
    parse_days,
    urgency_key,
)
from api.authz import Permission, require
from api.deps import PoolDep, TenantDep, get_settings
from api.schemas import DEVICE_ID_PATTERN
from devices.attributes import WASTE_STREAMS
from storage import waste as wq
from territory.config import Settings

router = APIRouter(prefix="/waste", tags=["waste"])

SettingsDep = Annotated[Settings, Depends(get_settings)]

ColumnPath = Annotated[str, Path(description="Waste column id", examples=["wc-quimper-0007"])]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No waste column with this id"}}
STREAMS: tuple[str, ...] = WASTE_STREAMS


class Forecast(BaseModel):
    fill_pct: float | None = Field(description="Latest kept fill level, %")
    rate_pct_per_day: float | None = Field(description="Fill rate, % per day")
    rate_source: Literal["cycle", "history", "stream"] | None = Field(
        description="cycle: the current cycle's slope; history: the median of the last cycles'; "
        "stream: the median of the stream's columns"
    )
    threshold_pct: float
    eta_threshold: datetime | None = Field(
        description="When the column reaches its threshold (in the past when over it)"
    )
    last_emptied: datetime | None
    reliability: Literal["low", "medium", "high"]
    fill_ts: datetime | None = Field(description="Device time of the fill level")


class EmptiedIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: AwareDatetime | None = Field(
        default=None, description="When the column was emptied (default: now)"
    )


class EmptiedOut(BaseModel):
    device_id: str
    at: datetime


class ListItem(BaseModel):
    device_id: str
    fill_pct: float | None
    rate_pct_per_day: float | None
    eta_threshold: datetime | None
    reason: Literal["full", "due", "alarm"]
    lat: float | None
    lon: float | None
    last_emptied: datetime | None
    reading_age_s: int | None = Field(description="Age of the fill level, seconds")


class CollectionList(BaseModel):
    date: date
    stream: str | None
    group: str | None
    items: list[ListItem]


def _local(ts: datetime | None) -> datetime | None:
    """Europe/Paris, to the second: what a planner reads."""
    return ts.astimezone(TZ).replace(microsecond=0) if ts is not None else None


def _round(x: float | None, digits: int) -> float | None:
    return round(x, digits) if x is not None else None


async def _column_or_404(
    pool: PoolDep, device_id: str, tenant: str | None
) -> tuple[wq.ColumnDevice, Any]:
    col, state = (
        await wq.column_forecast(pool, device_id, tenant)
        if re.match(DEVICE_ID_PATTERN, device_id)
        else (None, None)
    )
    if col is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no waste column {device_id!r}")
    return col, state


@router.get(
    "/columns/{device_id}/forecast",
    response_model=Forecast,
    responses=NOT_FOUND,
    summary="A column's fill level, fill rate and when it reaches its threshold",
    dependencies=[require(Permission.WASTE_READ)],
)
async def forecast(device_id: ColumnPath, pool: PoolDep, tenant: TenantDep) -> Forecast:
    col, st = await _column_or_404(pool, device_id, tenant)
    if st is None:
        threshold = col.attributes.get("threshold_pct", 80.0)
        return Forecast(
            fill_pct=None,
            rate_pct_per_day=None,
            rate_source=None,
            threshold_pct=float(threshold),
            eta_threshold=None,
            last_emptied=_local(await wq.last_crew_emptied(pool, device_id)),
            reliability="low",
            fill_ts=None,
        )
    return Forecast(
        fill_pct=_round(st.fill_pct, 1),
        rate_pct_per_day=_round(st.rate_pct_per_day, 2),
        rate_source=st.rate_source,
        threshold_pct=st.threshold_pct,
        eta_threshold=_local(st.eta_threshold),
        last_emptied=_local(st.last_emptied),
        reliability=st.reliability,
        fill_ts=_local(st.fill_ts),
    )


@router.post(
    "/columns/{device_id}/emptied",
    response_model=EmptiedOut,
    status_code=status.HTTP_201_CREATED,
    responses=NOT_FOUND,
    summary="Record that a crew emptied the column",
    dependencies=[require(Permission.WASTE_EMPTY)],
)
async def emptied(
    device_id: ColumnPath,
    pool: PoolDep,
    settings: SettingsDep,
    tenant: TenantDep,
    body: EmptiedIn | None = None,
) -> EmptiedOut:
    now = datetime.now(UTC)
    at = body.at if body is not None and body.at is not None else now
    if at > now + timedelta(seconds=settings.future_tolerance_s):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "at: the emptying cannot be in the future"
        )
    if not re.match(DEVICE_ID_PATTERN, device_id) or not await wq.record_emptied(
        pool, device_id, at, tenant
    ):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no waste column {device_id!r}")
    return EmptiedOut(device_id=device_id, at=at.astimezone(TZ))


@router.get(
    "/collection-list",
    response_model=CollectionList,
    responses={404: {"description": "Unknown stream or round"}},
    summary="The columns to empty on a day, most urgent first",
    dependencies=[require(Permission.WASTE_READ)],
)
async def collection_list(
    pool: PoolDep,
    settings: SettingsDep,
    tenant: TenantDep,
    day: Annotated[
        date | None,
        Query(alias="date", description="YYYY-MM-DD (default: today in Europe/Paris)"),
    ] = None,
    stream: Annotated[str | None, Query(description="Waste stream (default: all)")] = None,
    group: Annotated[
        str | None, Query(description="Collection round: the columns' group (default: all)")
    ] = None,
) -> CollectionList:
    now = datetime.now(UTC)
    day = day or now.astimezone(TZ).date()
    if not 2000 <= day.year <= 2999:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"date: {day.isoformat()} is out of range"
        )
    if stream is not None and (
        stream not in STREAMS or not await wq.stream_known(pool, stream, tenant)
    ):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"no waste column collects stream {stream!r} (streams: {', '.join(STREAMS)})",
        )
    if group is not None and not await wq.group_known(pool, group, tenant):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no waste column in round {group!r}")
    default_horizon = due_horizon(day, parse_days(settings.waste_collection_days.split(",")))
    rows = await wq.list_candidates(
        pool,
        stream,
        group,
        min_fill_pct=MIN_LIST_FILL_PCT,
        alarms=sorted(LIST_ALARMS),
        due_before=default_horizon,
        # no round's next collection day is more than a week after `day`
        custom_due_before=local_midnight(day + timedelta(days=8)),
        tenant=tenant,
    )
    horizons: dict[tuple[str, ...], datetime] = {}
    picked = []
    for row in rows:
        st = row.state
        days = tuple(row.collection_days or ())
        if days and days not in horizons:
            horizons[days] = due_horizon(day, parse_days(days))
        cand = ListCandidate(
            device_id=st.device_id,
            fill_pct=st.fill_pct,
            rate_pct_per_day=st.rate_pct_per_day,
            threshold_pct=st.threshold_pct,
            eta_threshold=st.eta_threshold,
            fill_ts=st.fill_ts,
            alarms=st.last_alarms,
            horizon=horizons[days] if days else default_horizon,
        )
        reason = list_reason(cand)
        if reason is not None:
            picked.append((urgency_key(cand, reason), reason, row))
    picked.sort(key=lambda p: p[0])
    items = [
        ListItem(
            device_id=row.state.device_id,
            fill_pct=_round(row.state.fill_pct, 1),
            rate_pct_per_day=_round(row.state.rate_pct_per_day, 2),
            eta_threshold=_local(row.state.eta_threshold),
            reason=reason,
            lat=row.lat,
            lon=row.lon,
            last_emptied=_local(row.state.last_emptied),
            # a device clock may run up to the ingest's future tolerance ahead
            reading_age_s=(
                max(0, int((now - row.state.fill_ts).total_seconds()))
                if row.state.fill_ts
                else None
            ),
        )
        for _, reason, row in picked
    ]
    return CollectionList(date=day, stream=stream, group=group, items=items)

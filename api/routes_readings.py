"""A device's readings: the latest, a time range page by page, and aggregates per bucket.

The kind's declaration (devices/kinds/) gives the fields of `values`."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status

from api.authz import Permission, require
from api.cursors import decode_ts_cursor, ts_cursor
from api.deps import OwnedDevice, PoolDep, heavy_slot
from api.limits import LimitedJSONRoute
from api.routes_devices import NOT_FOUND, DevicePath, End, Start
from api.schemas import (
    Aggregate,
    BucketOut,
    FieldStatsOut,
    Latest,
    Radio,
    ReadingOut,
    ReadingPage,
)
from devices.kinds import DeviceKind, kind_spec
from storage import readings as rq

router = APIRouter(prefix="/devices", tags=["readings"], route_class=LimitedJSONRoute)

READ = [require(Permission.READ)]


def _reading_out(kind: DeviceKind, r: rq.StoredReading) -> ReadingOut:
    radio = Radio(**dataclasses.asdict(r.radio)) if r.radio else None
    # Through the kind's declared values model: the same shape /readings pages have.
    values = kind_spec(kind).values_model.model_validate(r.values).model_dump()
    return ReadingOut(ts=r.ts, received_at=r.received_at, values=values, radio=radio)


@router.get(
    "/{device_id}/latest",
    response_model=Latest,
    responses=NOT_FOUND,
    summary="The device's most recent reading (by device time)",
    dependencies=READ,
)
async def latest(device_id: DevicePath, pool: PoolDep, dev: OwnedDevice) -> Latest:
    r = await rq.latest_reading(pool, dev.kind, device_id)
    return Latest(
        device_id=device_id, kind=dev.kind, reading=_reading_out(dev.kind, r) if r else None
    )


# The largest readings page: about 1.5 MB of JSON. A page is read and serialised while holding
# one of the few heavy-read slots (TERRITORY_API_HEAVY_CONCURRENCY).
MAX_READINGS_PAGE = 5000


@router.get(
    "/{device_id}/readings",
    response_model=ReadingPage,
    responses=NOT_FOUND,
    summary="Readings in a time range, paginated",
    description=f"At most {MAX_READINGS_PAGE} readings per page; follow `next_cursor` for more.",
    dependencies=READ,
)
async def readings(
    request: Request,
    device_id: DevicePath,
    pool: PoolDep,
    dev: OwnedDevice,
    start: Start = None,
    end: End = None,
    limit: Annotated[int, Query(ge=1, le=MAX_READINGS_PAGE)] = 1000,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "asc",
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
) -> Response:
    if start and end and end <= start:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "end must be after start")
    after = decode_ts_cursor(cursor) if cursor else None
    async with heavy_slot(request):
        rows = await rq.readings_page_json(
            pool,
            dev.kind,
            device_id,
            start=start,
            end=end,
            after=after,
            limit=limit + 1,
            descending=order == "desc",
        )
    # Each reading comes written as JSON by PostgreSQL: built in Python, a 5,000-reading page
    # cost ~100 ms of CPU on the event loop every other request waits for (docs/api.md).
    # `test_readings_match_their_schema` holds the result to ReadingPage.
    more = len(rows) > limit
    rows = rows[:limit]
    head = json.dumps({"device_id": device_id, "kind": dev.kind.value})[:-1]
    next_cursor = json.dumps(ts_cursor(rows[-1].ts) if more else None)
    items = ",".join(r.json for r in rows)
    body = f'{head},"items":[{items}],"next_cursor":{next_cursor}}}'
    return Response(content=body.encode(), media_type="application/json")


BUCKETS = {
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "30m": timedelta(minutes=30),
    "1h": timedelta(hours=1),
    "3h": timedelta(hours=3),
    "6h": timedelta(hours=6),
    "12h": timedelta(hours=12),
    "1d": timedelta(days=1),
}
MAX_BUCKETS = 5000


@router.get(
    "/{device_id}/readings/aggregate",
    response_model=Aggregate,
    responses=NOT_FOUND,
    summary="Min, max, average and last of each numeric field per time bucket",
    description="Buckets are aligned on UTC midnight. `start` defaults to `end` minus one day; "
    "`end` to now.",
    dependencies=READ,
)
async def aggregate(
    request: Request,
    device_id: DevicePath,
    pool: PoolDep,
    dev: OwnedDevice,
    bucket: Annotated[
        str, Query(description="One of " + ", ".join(BUCKETS), examples=["1h"])
    ] = "1h",
    start: Start = None,
    end: End = None,
) -> Aggregate:
    width = BUCKETS.get(bucket)
    if width is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"bucket must be one of {', '.join(BUCKETS)}, got {bucket!r}",
        )
    end = end or datetime.now(UTC)
    start = start or end - timedelta(days=1)  # QueryTime keeps this inside Python's range
    if end <= start:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "end must be after start")
    if (end - start) / width > MAX_BUCKETS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"range holds more than {MAX_BUCKETS} buckets of {bucket}; use a wider bucket",
        )
    async with heavy_slot(request):
        rows = await rq.aggregate(pool, dev.kind, device_id, bucket=width, start=start, end=end)
    return Aggregate(
        device_id=device_id,
        kind=dev.kind,
        bucket=bucket,
        start=start,
        end=end,
        buckets=[
            BucketOut(
                start=b.start,
                count=b.count,
                fields={
                    k: FieldStatsOut(min=s.min, max=s.max, avg=s.avg, last=s.last)
                    for k, s in b.fields.items()
                },
            )
            for b in rows
        ],
    )

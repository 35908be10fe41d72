"""The waste job: keeps each column's emptyings and forecast current (docs/waste.md).

A column is recomputed when it has new readings or a new crew confirmation, from its last
emptying that nothing new can undo (storage.waste.columns_inputs), never from the whole history
once it has one: the cost of a run follows the columns that reported, times the length of their
current cycle. A column whose registration changed (depth, threshold …) is recomputed from its
first reading. Columns without a rate of their own then take their stream's median.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import asyncpg

from analytics.waste import (
    CREW_MERGE,
    ColumnParams,
    Point,
    eta,
    forecast_column,
    reading_fill,
    valid_points,
    with_stream_rate,
)
from storage import waste as wq
from storage.changes import Window, changed_devices
from territory.config import Settings
from worker.jobs import Job

# Columns recomputed per round of queries: bounds the readings held in memory at once (a first
# build reads every column's whole history).
CHUNK = 200
_EVER = datetime(1970, 1, 1, tzinfo=UTC)


def _recompute(device: wq.ColumnDevice, inputs: wq.ColumnInputs) -> wq.ColumnResult:
    params = ColumnParams.from_attributes(device.attributes)
    context: Point | None = None
    for r in inputs.before:
        fill = reading_fill(r, params)
        if fill is not None:
            context = Point(r.ts, fill)
            break
    f = forecast_column(
        valid_points(inputs.readings, params),
        inputs.crew,
        params,
        context=context,
        anchor=inputs.anchor,
        past_rates=inputs.past_rates,
    )
    last = inputs.readings[-1] if inputs.readings else (inputs.before[0] if inputs.before else None)
    return wq.ColumnResult(device.id, inputs.anchor, f, last)


async def recompute_columns(
    conn: asyncpg.Connection, columns: Mapping[str, wq.ColumnDevice], since: Mapping[str, datetime]
) -> None:
    ids = sorted(columns)
    for k in range(0, len(ids), CHUNK):
        chunk = {i: since[i] for i in ids[k : k + CHUNK]}
        inputs = await wq.columns_inputs(conn, chunk, CREW_MERGE)
        await wq.save_columns(conn, [_recompute(columns[i], inputs[i]) for i in chunk])


async def refresh_stream_rates(conn: asyncpg.Connection) -> int:
    medians = await wq.stream_medians(conn)
    rows = await wq.fallback_columns(conn)
    changed = []
    for row in rows:
        before = (row.forecast.rate_pct_per_day, row.forecast.eta_threshold)
        row.forecast.rate_pct_per_day = None
        row.forecast.rate_source = None
        f = with_stream_rate(row.forecast, medians.get((row.tenant, row.stream)))
        if f.rate_source is None and f.fill_pct is not None and f.fill_ts is not None:
            f.eta_threshold = eta(f.fill_pct, f.fill_ts, None, f.threshold_pct)
            f.reliability = "low"
        if (f.rate_pct_per_day, f.eta_threshold) != before:
            changed.append(row)
    if changed:
        await wq.set_stream_rates(conn, changed)
    return len(changed)


async def run(conn: asyncpg.Connection, window: Window, settings: Settings) -> int:
    await wq.without_jit(conn)
    since = await changed_devices(conn, "waste_column_readings", window)
    for dev, ts in (await changed_devices(conn, "waste_crew_emptied", window)).items():
        since[dev] = min(ts, since.get(dev, ts))
    if not window.first_run:  # the first run recomputes every column with readings anyway
        for dev in await wq.columns_updated(conn, window.lower, window.upper):
            since[dev] = _EVER
    columns = await wq.waste_columns(conn, list(since))
    if not columns:
        return 0  # the stream medians only move with a column's state or registration
    await recompute_columns(conn, columns, since)
    await refresh_stream_rates(conn)
    return len(columns)


JOB = Job("waste", run, interval_s=10.0)

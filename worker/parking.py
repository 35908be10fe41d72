"""The `parking` job: keeps `parking_zone_slots` (time-weighted occupancy per zone and 5-minute
slot) in step with the parking sensors' readings.

A new reading of a space changes that space's states from the reading's time up to the space's
next reading (or the freshness window after the newest new reading). The job widens those spans
to whole slots, merges them per zone, and recomputes each merged span of each zone from all the
zone's readings there, replacing the stored slots: running it twice changes nothing, and the
cost follows the new readings, not the history. The first run rebuilds everything.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import asyncpg

from analytics.parking import SLOT_S, merge_ranges, slot_seconds
from storage import parking as pq
from storage.changes import Window
from territory.config import Settings
from worker.jobs import Job

JOB_NAME = "parking"


# A long span (the first run: a zone's whole history) is cut into pieces of at most a week, and
# the pieces are read, computed and written in batches of about this many zone-days: one query
# each way per batch, and a bounded amount of readings in memory.
PIECE_S = 7 * 86400
BATCH_ZONE_DAYS = 28.0


async def run(conn: asyncpg.Connection, window: Window, settings: Settings) -> int:
    fresh = settings.parking_freshness_s
    spans = await pq.affected_spans(conn, window, fresh)
    if window.first_run:
        await pq.clear_zone_slots(conn)
    by_zone: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for s in spans:
        by_zone[s.zone].append((s.lo.timestamp(), s.hi.timestamp()))
    batch: list[tuple[str, float, float]] = []
    span_s = 0.0
    written = 0
    for zone in sorted(by_zone):
        for lo, hi in merge_ranges(by_zone[zone], SLOT_S):
            for piece_lo in range(int(lo), int(hi), PIECE_S):
                piece_hi = min(piece_lo + PIECE_S, int(hi))
                batch.append((zone, piece_lo, piece_hi))
                span_s += piece_hi - piece_lo
                if span_s >= BATCH_ZONE_DAYS * 86400:
                    written += await _recompute(conn, batch, fresh)
                    batch, span_s = [], 0.0
    if batch:
        written += await _recompute(conn, batch, fresh)
    return written


async def _recompute(
    conn: asyncpg.Connection, batch: list[tuple[str, float, float]], fresh: float
) -> int:
    ranges = [
        pq.ZoneRange(zone, datetime.fromtimestamp(lo, UTC), datetime.fromtimestamp(hi, UTC))
        for zone, lo, hi in batch
    ]
    readings = await pq.zone_readings(conn, ranges, fresh)
    rows: list[tuple[str, datetime, float, float]] = []
    for (zone, lo, hi), spaces in zip(batch, readings, strict=True):
        rows.extend(
            (zone, datetime.fromtimestamp(s.start, UTC), s.known_s, s.occupied_s)
            for s in slot_seconds(spaces, lo, hi, SLOT_S)
        )
    await pq.replace_zone_slots(conn, ranges, rows)
    return len(rows)


def parking_job() -> Job:
    return Job(JOB_NAME, run, interval_s=5.0)

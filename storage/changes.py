"""The readings stored since a worker job last looked: a change feed without triggers.

Every reading row carries `stored_at`, the start time of the transaction that stored it
(migration 007). A transaction still running may yet commit rows stamped with its start time,
so a job may only read up to the oldest transaction start among the other sessions: below that
line nothing can appear any more. The line is read before the rows (a later snapshot sees every
transaction that had ended by then), and the job's watermark moves to it in the transaction that
writes what the job derived from those rows. A crash therefore re-reads the same window, and a
job that recomputes (not increments) its derived rows gives the same answers however often it
runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

# Margin for a transaction that has taken its start time but not yet published it in
# pg_stat_activity (microseconds in practice).
PUBLISH_MARGIN = timedelta(seconds=1)
_BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Window:
    """Rows with lower <= stored_at < upper are new to the job."""

    job: str
    lower: datetime
    upper: datetime

    @property
    def first_run(self) -> bool:
        return self.lower == _BEGINNING


async def safe_upper(conn: asyncpg.Connection, margin: timedelta = PUBLISH_MARGIN) -> datetime:
    """The newest stored_at below which no row can still appear. Only client sessions can store
    readings: autovacuum and background workers (TimescaleDB's jobs) are not waited for, or a
    long vacuum of a large table would hold every job back. Must be the first statement
    of the job's transaction to read pg_stat_activity, which is read once per transaction."""
    upper: datetime = await conn.fetchval(
        """
        SELECT least(
            now() - $1::interval,
            (SELECT min(xact_start) FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()
                AND xact_start IS NOT NULL AND backend_type = 'client backend'))
        """,
        margin,
    )
    return upper


async def open_window(
    conn: asyncpg.Connection, job: str, margin: timedelta = PUBLISH_MARGIN
) -> Window:
    """Call inside the job's transaction before reading any readings (after `try_lock_job`,
    which touches no statistics view)."""
    upper = await safe_upper(conn, margin)
    await conn.execute(
        "INSERT INTO worker_watermarks (job, stored_upto) VALUES ($1, $2) "
        "ON CONFLICT (job) DO NOTHING",
        job,
        _BEGINNING,
    )
    lower: datetime = await conn.fetchval(
        "SELECT stored_upto FROM worker_watermarks WHERE job = $1 FOR UPDATE", job
    )
    return Window(job, lower, max(lower, upper))


async def close_window(conn: asyncpg.Connection, window: Window) -> None:
    await conn.execute(
        "UPDATE worker_watermarks SET stored_upto = $2, updated_at = now() WHERE job = $1",
        window.job,
        window.upper,
    )


async def try_lock_job(conn: asyncpg.Connection, job: str) -> bool:
    """A transaction-scoped advisory lock: two workers never run the same job at once."""
    return bool(
        await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext('worker:' || $1))", job)
    )


async def changed_devices(
    conn: asyncpg.Connection, table: str, window: Window
) -> dict[str, datetime]:
    """Each device with rows new in the window, with the oldest device time among them: what a
    job must recompute from. `table` is one of the reading tables (a constant, not input).
    Rows at an infinite time (stored before the ingest refused them) cannot be analysed and
    are left out."""
    rows = await conn.fetch(
        f"SELECT device_id, min(ts) AS since FROM {table} "
        "WHERE stored_at >= $1 AND stored_at < $2 AND isfinite(ts) GROUP BY device_id",
        window.lower,
        window.upper,
    )
    return {r["device_id"]: r["since"] for r in rows}


async def watermarks(conn: asyncpg.Connection) -> dict[str, datetime]:
    rows = await conn.fetch("SELECT job, stored_upto FROM worker_watermarks")
    return {r["job"]: r["stored_upto"] for r in rows}

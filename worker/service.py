"""The `territory worker` process: run each job when due, one transaction per run.

Several workers may run at once (a second one for availability): a job's transaction takes an
advisory lock first, and a worker that does not get it skips that run. A transient database
failure ends the run (rolled back: the window is read again next time) and the loop goes on
after a pause; anything else is a bug in a job, logged with its traceback, and that job is tried
again at its next turn while the others go on.

A job runs every `interval_s`, or less often while its runs are long: it keeps to a share of
the wall clock (`worker_job_duty`), so that on a machine the ingest saturates the worker backs
off and each run does the work of more new readings, up to `worker_max_stretch` times the
interval. A first build (a job's first run, over the whole history) does not count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg

from storage.changes import PUBLISH_MARGIN, close_window, open_window, try_lock_job
from storage.errors import is_transient
from storage.pool import connect
from territory import metrics
from territory.config import Settings
from worker.jobs import Job

log = logging.getLogger("territory.worker")


@dataclass
class JobStats:
    runs: int = 0
    skipped: int = 0  # another worker held the lock
    failures: int = 0
    touched: int = 0
    last_duration_s: float = 0.0
    last_first_run: bool = False  # the last run was a first build


@dataclass
class Worker:
    settings: Settings
    jobs: Sequence[Job]
    stats: dict[str, JobStats] = field(default_factory=dict)
    margin: timedelta = PUBLISH_MARGIN
    _conn: asyncpg.Connection | None = None

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await connect(
                self.settings.database_url, command_timeout=self.settings.worker_job_timeout_s
            )
            await self._conn.execute("SET application_name = 'territory-worker'")
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=5)

    async def run_job(self, job: Job) -> bool:
        """One run of `job`. False: skipped (lock held elsewhere) or failed."""
        st = self.stats.setdefault(job.name, JobStats())
        started = time.monotonic()
        conn = await self._connection()
        try:
            async with conn.transaction():
                if not await try_lock_job(conn, job.name):
                    st.skipped += 1
                    metrics.JOB_RUNS.labels(job.name, "skipped").inc()
                    return False
                window = await open_window(conn, job.name, self.margin)
                st.last_first_run = window.first_run
                touched = await job.run(conn, window, self.settings)
                await close_window(conn, window)
        except BaseException:
            metrics.JOB_RUNS.labels(job.name, "failed").inc()
            raise
        st.runs += 1
        st.touched += touched
        st.last_duration_s = time.monotonic() - started
        metrics.JOB_RUNS.labels(job.name, "ok").inc()
        metrics.JOB_SECONDS.labels(job.name).observe(st.last_duration_s)
        metrics.JOB_ROWS.labels(job.name).inc(touched)
        if touched:
            log.info("%s: %d updated in %.2fs", job.name, touched, st.last_duration_s)
        return True

    def pause_after(self, job: Job, ran: bool) -> float:
        """Seconds from the end of a run to the next: the job's interval, or longer so that
        its runs take at most `worker_job_duty` of the time, up to `worker_max_stretch` times
        the interval."""
        st = self.stats.get(job.name)
        if not ran or st is None or st.last_first_run or not job.backs_off:
            return job.interval_s
        s = self.settings
        d = st.last_duration_s
        return max(
            job.interval_s, min(d / s.worker_job_duty - d, job.interval_s * s.worker_max_stretch)
        )

    async def run_once(self) -> None:
        """Every job once, in order: what tests and `territory worker --once` call."""
        for job in self.jobs:
            await self.run_job(job)

    async def run_forever(self, stop: asyncio.Event) -> None:
        due = {job.name: 0.0 for job in self.jobs}
        pause = 0.5
        while not stop.is_set():
            now = time.monotonic()
            for job in self.jobs:
                if stop.is_set() or due[job.name] > now:
                    continue
                ran = False
                try:
                    ran = await self.run_job(job)
                    pause = 0.5
                except Exception as exc:
                    self.stats.setdefault(job.name, JobStats()).failures += 1
                    if is_transient(exc):
                        log.warning(
                            "%s: database unavailable (%s); retrying in %.1fs", job.name, exc, pause
                        )
                        await self.close()
                        await _sleep_or_stop(stop, pause)
                        pause = min(pause * 2, 10.0)
                        break
                    log.exception("%s failed; it runs again at its next turn", job.name)
                wait = self.pause_after(job, ran)
                metrics.JOB_WAIT.labels(job.name).set(wait)
                due[job.name] = time.monotonic() + wait
            next_due = min(due.values(), default=time.monotonic() + 1.0)
            await _sleep_or_stop(stop, max(0.05, next_due - time.monotonic()))
        await self.close()


async def _sleep_or_stop(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=delay)


async def run_worker(settings: Settings, stop: asyncio.Event, *, once: bool = False) -> None:
    from worker.registry import all_jobs, all_services

    if not settings.database_url:
        raise SystemExit("TERRITORY_DATABASE_URL must be set")
    worker = Worker(settings, all_jobs())
    if not once:
        metrics.serve(settings.worker_metrics_port, "worker")
    log.info("worker: jobs %s", ", ".join(j.name for j in worker.jobs) or "(none)")
    services = all_services()
    log.info("worker: beside them %s", ", ".join(s.name for s in services) or "(nothing)")
    tasks = [] if once else [asyncio.create_task(s.run(settings, stop)) for s in services]
    try:
        if once:
            await worker.run_once()
            for s in services:
                if s.once is not None:
                    await s.once(settings)
        else:
            await worker.run_forever(stop)
    finally:
        await worker.close()
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


def main(settings: Settings, *, once: bool = False) -> None:
    if settings.worker_nice:
        # The process's own CPU (decoding rows, the models) yields to the ingest's under
        # contention; lowering priority needs no privilege.
        try:
            os.nice(settings.worker_nice)
        except OSError as exc:
            log.warning("worker: could not lower priority (%s)", exc)

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(settings, stop, once=once)

    asyncio.run(_main())

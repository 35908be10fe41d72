"""The worker's change feed and job runner, on real PostgreSQL.

What matters is that no stored reading is ever missed by a job, even one committed by a
transaction that started before the job looked, and that a job's window only moves with the
job's own successful commit.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from prometheus_client import REGISTRY

from storage.changes import Window, changed_devices
from storage.pool import connect
from territory.config import Settings
from worker.jobs import Job
from worker.service import Worker

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
# The worker keeps a second's margin behind the oldest running transaction; these tests commit
# before the worker looks, so they can read right up to now.
NO_MARGIN = timedelta(0)


class Recorder:
    """A job that records which of the test's devices it was shown, and when it was run."""

    def __init__(self, device_prefix: str, fail: bool = False) -> None:
        self.prefix = device_prefix
        self.fail = fail
        self.seen: list[dict[str, datetime]] = []
        self.windows: list[Window] = []

    async def __call__(self, conn: asyncpg.Connection, window: Window, s: Settings) -> int:
        changed = await changed_devices(conn, "water_meter_readings", window)
        mine = {d: t for d, t in changed.items() if d.startswith(self.prefix)}
        self.seen.append(mine)
        self.windows.append(window)
        if self.fail:
            raise RuntimeError("job bug")
        return len(mine)


async def _insert(conn: asyncpg.Connection, device: str, ts: datetime, index: float) -> None:
    await conn.execute(
        "INSERT INTO water_meter_readings (device_id, ts, received_at, index_m3) "
        "VALUES ($1, $2, now(), $3)",
        device,
        ts,
        index,
    )


def test_new_rows_are_seen_once_with_their_oldest_time(settings: Settings, uid: str) -> None:
    job = Recorder(f"wk-{uid}")
    worker = Worker(settings, margin=NO_MARGIN, jobs=[Job(f"t-once-{uid}", job)])

    async def scenario() -> None:
        conn = await connect(settings.database_url)
        try:
            await _insert(conn, f"wk-{uid}-a", T0, 1.0)
            await _insert(conn, f"wk-{uid}-a", T0 - timedelta(days=3), 0.5)  # late reading
            await _insert(conn, f"wk-{uid}-b", T0, 2.0)
            await worker.run_once()
            await worker.run_once()  # nothing new
            await _insert(conn, f"wk-{uid}-b", T0 + timedelta(hours=1), 2.5)
            await worker.run_once()
        finally:
            await conn.close()
            await worker.close()

    asyncio.run(scenario())
    runs = REGISTRY.get_sample_value(
        "territory_worker_job_runs_total", {"job": f"t-once-{uid}", "outcome": "ok"}
    )
    assert runs == 3
    assert job.seen[0] == {f"wk-{uid}-a": T0 - timedelta(days=3), f"wk-{uid}-b": T0}
    assert job.seen[1] == {}
    assert job.seen[2] == {f"wk-{uid}-b": T0 + timedelta(hours=1)}
    assert job.windows[1].lower == job.windows[0].upper


def test_a_transaction_that_commits_late_is_not_missed(settings: Settings, uid: str) -> None:
    """The ingest's transaction starts (and stamps stored_at), the worker runs, then the
    transaction commits: the row must show up in a later window, not fall behind the
    watermark."""
    job = Recorder(f"wl-{uid}")
    worker = Worker(settings, margin=NO_MARGIN, jobs=[Job(f"t-late-{uid}", job)])

    async def scenario() -> None:
        slow = await connect(settings.database_url)
        try:
            tx = slow.transaction()
            await tx.start()
            await _insert(slow, f"wl-{uid}", T0, 1.0)
            started = await slow.fetchval("SELECT now()")
            await worker.run_once()  # the row is not visible yet
            assert job.windows[-1].upper <= started
            await tx.commit()
            await worker.run_once()
        finally:
            await slow.close()
            await worker.close()

    asyncio.run(scenario())
    assert job.seen[0] == {}
    assert job.seen[1] == {f"wl-{uid}": T0}


def test_a_failed_run_keeps_its_window(settings: Settings, uid: str) -> None:
    failing = Recorder(f"wf-{uid}", fail=True)
    name = f"t-fail-{uid}"

    async def scenario() -> None:
        conn = await connect(settings.database_url)
        try:
            await _insert(conn, f"wf-{uid}", T0, 1.0)
            with pytest.raises(RuntimeError):
                await Worker(settings, margin=NO_MARGIN, jobs=[Job(name, failing)]).run_once()
            ok = Recorder(f"wf-{uid}")
            w = Worker(settings, margin=NO_MARGIN, jobs=[Job(name, ok)])
            await w.run_once()
            await w.close()
            assert ok.seen == [{f"wf-{uid}": T0}]
        finally:
            await conn.close()

    asyncio.run(scenario())


def test_two_workers_never_run_the_same_job_at_once(settings: Settings, uid: str) -> None:
    name = f"t-lock-{uid}"
    job = Recorder(f"wx-{uid}")
    worker = Worker(settings, margin=NO_MARGIN, jobs=[Job(name, job)])

    async def scenario() -> bool:
        other = await connect(settings.database_url)
        try:
            async with other.transaction():
                await other.fetchval(
                    "SELECT pg_advisory_xact_lock(hashtext('worker:' || $1))", name
                )
                ran = await worker.run_job(worker.jobs[0])
        finally:
            await other.close()
            await worker.close()
        return ran

    assert asyncio.run(scenario()) is False
    assert job.seen == []
    assert worker.stats[name].skipped == 1


class Slow:
    """A job whose every run takes `seconds` (as a long recomputation would), counting runs."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.runs = 0

    async def __call__(self, conn: asyncpg.Connection, window: Window, s: Settings) -> int:
        self.runs += 1
        await asyncio.sleep(self.seconds)
        return 0


def test_a_job_whose_runs_are_long_backs_off(settings: Settings, uid: str) -> None:
    """Runs of 0.3 s with a duty of 25 %: after the first build (its interval, 0.1 s) the job
    waits 0.3 / 0.25 - 0.3 = 0.9 s, capped at 5 x its interval = 0.5 s; with a looser cap, the
    whole 0.9 s. A job that does not back off keeps its interval."""
    slow = Slow(0.3)
    job = Job(f"t-duty-{uid}", slow, interval_s=0.1)
    tight = settings.model_copy(update={"worker_job_duty": 0.25, "worker_max_stretch": 5.0})
    loose = settings.model_copy(update={"worker_job_duty": 0.25, "worker_max_stretch": 100.0})
    worker = Worker(tight, margin=NO_MARGIN, jobs=[job])
    pauses: list[float] = []

    async def scenario() -> None:
        try:
            await worker.run_job(job)
            pauses.append(worker.pause_after(job, True))
            await worker.run_job(job)
            pauses.append(worker.pause_after(job, True))
            pauses.append(worker.pause_after(job, False))  # skipped or failed: its interval
            worker.settings = loose
            pauses.append(worker.pause_after(job, True))
            # A job that never backs off (the broker's credentials): its interval.
            steady = Job(f"t-steady-{uid}", Slow(0.3), interval_s=0.1, backs_off=False)
            await worker.run_job(steady)
            await worker.run_job(steady)
            pauses.append(worker.pause_after(steady, True))
        finally:
            await worker.close()

    asyncio.run(scenario())
    assert worker.stats[job.name].last_duration_s >= 0.3
    assert pauses[0] == pytest.approx(0.1)
    assert pauses[1] == pytest.approx(0.5)
    assert pauses[2] == pytest.approx(0.1)
    d = worker.stats[job.name].last_duration_s
    assert pauses[3] == pytest.approx(d / 0.25 - d)
    assert pauses[3] >= 0.9
    assert pauses[4] == pytest.approx(0.1)


def test_the_loop_keeps_a_slow_job_to_its_share_of_time(settings: Settings, uid: str) -> None:
    """Interval 0.05 s, runs of 0.2 s, duty 20 %: a run and its 0.8 s pause take a second
    (the first build, 0.25 s), where the plain interval would fit about ten runs in 2.5 s."""
    slow = Slow(0.2)
    job = Job(f"t-loop-{uid}", slow, interval_s=0.05)
    s = settings.model_copy(update={"worker_job_duty": 0.2, "worker_max_stretch": 100.0})
    worker = Worker(s, margin=NO_MARGIN, jobs=[job])

    async def scenario() -> None:
        stop = asyncio.Event()
        loop = asyncio.create_task(worker.run_forever(stop))
        await asyncio.sleep(2.5)
        stop.set()
        await loop

    asyncio.run(scenario())
    assert 2 <= slow.runs <= 4, slow.runs

"""SIGTERM: flush, commit, acknowledge, exit, within a bounded time."""

from __future__ import annotations

import re

import pytest

from tests.faults import report
from tests.faults.harness import (
    PublishJob,
    Scenario,
    finish_and_count,
    seq_of,
    stored_count,
    wait_for,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]

# The pipeline's shutdown grace is 10 s; the process must be gone well within this.
EXIT_BOUND_S = 15.0


def test_sigterm_flushes_acks_and_exits(scenario: Scenario) -> None:
    stream = scenario.stream(6000)
    # Slow writes keep a queue in hand when the signal arrives.
    _, slow_db = scenario.slow_database(0.01)
    ingest = scenario.ingest("solo", database_url=slow_db)
    ingest.start()
    pub = scenario.publisher()
    job = PublishJob(pub, stream.messages(), rate=1500)
    job.start()

    job.wait_sent(3000)
    wait_for(lambda: stored_count(scenario.database_url, stream) > 500, 30, what="first rows")
    code, took = ingest.terminate(timeout=30)
    first = ingest.final_stats()
    flushed = [int(n) for n in re.findall(r"stopping: flushing (\d+) queued", ingest.log())]
    ingest.start()
    c = finish_and_count(scenario.database_url, job, stream)
    code2, _ = ingest.terminate()
    stats = ingest.final_stats()
    report.record(
        "SIGTERM mid-stream, restart",
        c,
        f"exited {code} in {took:.1f} s, flushing {flushed[0] if flushed else '?'} queued "
        f"messages; its successor found {stats[-1].duplicates} of its rows redelivered "
        f"(everything committed had been acknowledged)",
    )
    assert (c.lost, c.duplicated, c.unexpected) == (0, 0, 0), c.detail
    assert c.published == c.stored == stream.count
    assert code == 0 and took < EXIT_BOUND_S, (code, took)
    assert len(first) == 1 and first[0].acked == first[0].stored  # all it stored, it acked
    # Had it committed anything without acknowledging it, the broker would have redelivered
    # that to the next process, which would have counted it as a duplicate.
    assert stats[-1].duplicates == 0
    assert code2 == 0


def test_sigterm_during_a_database_outage(scenario: Scenario) -> None:
    """PostgreSQL is down and the ingest is retrying its write when SIGTERM comes: it stops
    within its grace period instead of retrying until the database is back, acknowledging
    nothing it did not commit; the broker keeps the rest for the next process."""
    stream = scenario.stream(5000)
    tap, tap_url = scenario.broker_tap()
    ingest = scenario.ingest("solo", mqtt_url=tap_url)
    ingest.start()
    pub = scenario.publisher()
    job = PublishJob(pub, stream.messages(), rate=250)
    job.start()
    pg = scenario.services.postgres

    job.wait_sent(1000)
    wait_for(lambda: stored_count(scenario.database_url, stream) > 200, 30, what="first rows")
    pg.stop()
    # In the retry loop: at least two failed attempts, so the backoff is under way.
    wait_for(lambda: ingest.log().count("write failed") >= 2, 30, 0.1, "write retries")
    conn = tap.by_client(ingest.client_id)[-1]
    acked_before = conn.acked
    job.wait_sent(2500)
    code, took = ingest.terminate(timeout=EXIT_BOUND_S + 15)
    unacked_at_exit = {seq_of(d.payload) for d in conn.in_flight()}
    acked_during_outage = conn.acked - acked_before
    gave_up = "database still unavailable at shutdown" in ingest.log()
    pg.start()
    successor = scenario.ingest("solo", mqtt_url=tap_url)
    successor.start()
    c = finish_and_count(scenario.database_url, job, stream)
    redelivered = {
        seq_of(d.payload) for d in tap.by_client(successor.client_id)[-1].deliveries if d.dup
    }
    code2, _ = successor.terminate()
    report.record(
        "SIGTERM during a PostgreSQL outage",
        c,
        f"exited {code} in {took:.1f} s (grace 10 s) while retrying its write; "
        f"{acked_during_outage} acked during the outage, {len(unacked_at_exit)} left unacked "
        f"at the broker, {len(redelivered & unacked_at_exit)} of them redelivered (DUP) to the "
        "next process",
    )
    assert code == 0 and took < EXIT_BOUND_S, (code, took, ingest.tail())
    assert gave_up, ingest.tail()
    assert acked_during_outage == 0
    assert unacked_at_exit and unacked_at_exit <= redelivered
    assert (c.lost, c.duplicated, c.unexpected) == (0, 0, 0), c.detail
    assert c.published == c.stored == stream.count
    assert code2 == 0

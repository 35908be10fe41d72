"""The broker restarted mid-stream (with persistence on), and frozen."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.faults import report
from tests.faults.harness import (
    PublishJob,
    Scenario,
    finish_and_count,
    stored_count,
    stored_seqs,
    wait_for,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def test_mosquitto_restarted_mid_stream(scenario: Scenario) -> None:
    """Every publish the broker acknowledged before it went down is stored, including those
    it had queued for the ingest and those in flight to it."""
    stream = scenario.stream(6000)
    # A slow database keeps a backlog queued in the broker when it goes down.
    _, slow_db = scenario.slow_database(0.03)
    ingest = scenario.ingest("solo", database_url=slow_db, TERRITORY_MQTT_RECEIVE_MAXIMUM=200)
    ingest.start()
    pid = ingest.pid
    pub = scenario.publisher()
    job = PublishJob(pub, stream.messages(), rate=1000)
    job.start()

    job.wait_sent(3000)
    wait_for(lambda: stored_count(scenario.database_url, stream) > 200, 30, what="first rows")
    broker = scenario.services.mosquitto
    broker.stop()  # SIGTERM: Mosquitto writes its persistence file on the way out
    acked_before = {m.seq for m in pub.acked()}
    stored_before = stored_count(scenario.database_url, stream)
    broker.start()
    c = finish_and_count(scenario.database_url, job, stream, timeout=90)

    missing_acked = acked_before - set(stored_seqs(scenario.database_url, stream))
    code, _ = ingest.terminate()
    report.record(
        "Mosquitto restarted mid-stream",
        c,
        f"{len(acked_before)} publishes acknowledged before the restart, "
        f"{len(acked_before) - stored_before} of them not yet stored (queued or in flight in "
        f"the broker); all stored after; ingest reconnected {ingest.connects() - 1} time(s)",
    )
    assert not missing_acked, sorted(missing_acked)[:20]
    assert len(acked_before) - stored_before > 500  # the restart really had a backlog to keep
    assert (c.lost, c.duplicated, c.unexpected) == (0, 0, 0), c.detail
    assert c.published == c.stored == stream.count
    assert code == 0 and ingest.pid == pid  # reconnected, never restarted
    assert ingest.connects() >= 2


def test_mosquitto_frozen_mid_stream(scenario: Scenario) -> None:
    """A broker that stops answering without closing anything (SIGSTOP: a hung process, or a
    network partition that sends no reset). The ingest must notice the silence by its keep-alive,
    drop the dead connection and reconnect once the broker answers again; nothing is lost."""
    stream = scenario.stream(4000)
    ingest = scenario.ingest("solo", TERRITORY_MQTT_KEEPALIVE_S=5)
    ingest.start()
    pid = ingest.pid
    pub = scenario.publisher()
    job = PublishJob(pub, stream.messages(), rate=500)
    job.start()

    job.wait_sent(1000)
    broker = scenario.services.mosquitto
    broker_pid = broker.pid
    assert broker_pid is not None
    os.kill(broker_pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        # Keep-alive 5 s: silence is given up on after 1.5 keep-alives, checked every 2.5 s.
        wait_for(
            lambda: ingest.disconnects() > 0,
            30,
            0.2,
            "the ingest to notice the silent broker",
        )
        noticed_after = time.monotonic() - frozen_at
    finally:
        os.kill(broker_pid, signal.SIGCONT)
    c = finish_and_count(scenario.database_url, job, stream, timeout=90)
    code, _ = ingest.terminate()
    report.record(
        "Mosquitto frozen (SIGSTOP) mid-stream",
        c,
        f"the ingest gave up on the silent connection {noticed_after:.1f} s after the freeze "
        f"(keep-alive 5 s) and reconnected {ingest.connects() - 1} time(s) once it answered",
    )
    assert (c.lost, c.duplicated, c.unexpected) == (0, 0, 0), c.detail
    assert c.published == c.stored == stream.count
    assert noticed_after < 15
    assert code == 0 and ingest.pid == pid, ingest.tail()
    assert ingest.connects() >= 2, ingest.tail()

"""The database failing under the ingest: stopped for 30 seconds, slow, and black-holed."""

from __future__ import annotations

import re
import threading
import time

import pytest

from tests.faults import report
from tests.faults.harness import (
    PublishJob,
    Scenario,
    broker_honours_receive_maximum,
    broker_version,
    census,
    finish_and_count,
    settle,
    sql,
    wait_for,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]

OUTAGE_S = 30.0


def _stored_below(url: str, prefix: str, n: int) -> int:
    rows = sql(
        url,
        "SELECT count(*) AS n FROM water_meter_readings "
        "WHERE starts_with(device_id, $1) AND index_m3 < $2",
        prefix,
        n,
    )
    return int(rows[0]["n"])


def test_postgres_stopped_for_30_seconds(scenario: Scenario) -> None:
    """The ingest keeps its broker connection, stops acknowledging, retries with backoff and
    catches up; it never exits or reconnects."""
    receive_max = 1000
    rate = 200
    stream = scenario.stream(int(rate * (OUTAGE_S + 12)))
    tap, tap_url = scenario.broker_tap()
    ingest = scenario.ingest("solo", mqtt_url=tap_url, TERRITORY_MQTT_RECEIVE_MAXIMUM=receive_max)
    ingest.start()
    pid = ingest.pid
    pub = scenario.publisher()
    job = PublishJob(pub, stream.messages(), rate=rate)
    job.start()
    pg = scenario.services.postgres

    job.wait_sent(rate * 5)
    conn = tap.by_client(ingest.client_id)[-1]
    pg.stop()
    t_down = time.monotonic()
    # Acks stop once the batch in hand has failed; sample them through the outage.
    time.sleep(3)
    acked_early = conn.acked
    while time.monotonic() - t_down < OUTAGE_S:
        assert ingest.alive, f"ingest exited during the outage:\n{ingest.tail()}"
        time.sleep(0.5)
    acked_late = conn.acked
    unacked_at_end = len(conn.snapshot_unacked())
    pg.start()
    t_up = time.monotonic()
    backlog_seqs = job.sent  # everything published up to now must be stored: the backlog
    wait_for(
        lambda: _stored_below(scenario.database_url, stream.prefix, backlog_seqs) >= backlog_seqs,
        120,
        0.1,
        f"the {backlog_seqs} messages published before the restart stored",
    )
    drain_s = time.monotonic() - t_up
    c = finish_and_count(scenario.database_url, job, stream)

    delays = [float(d) for d in re.findall(r"retrying in ([\d.]+)s", ingest.log())]
    code, _ = ingest.terminate()
    held = ingest.max_unacked_held()
    report.record(
        "PostgreSQL stopped 30 s mid-stream",
        c,
        f"backlog of {backlog_seqs - acked_late} messages drained {drain_s:.1f} s after "
        f"PostgreSQL was back; {len(delays)} write retries (backoff "
        f"{min(delays, default=0):.1f}..{max(delays, default=0):.1f} s); {unacked_at_end} "
        f"unacked at the broker during the outage, the ingest held at most {held} (bound "
        f"{receive_max}){_overrun_note(conn.max_unacked, receive_max)}; one broker connection "
        f"throughout",
    )
    assert (c.lost, c.duplicated, c.unexpected) == (0, 0, 0), c.detail
    assert c.published == c.stored == stream.count
    # No crash loop: the same process, the same broker connection, all along.
    assert code == 0 and pid == ingest.pid
    assert ingest.connects() == 1 and ingest.disconnects() == 0, ingest.tail()
    assert len(tap.by_client(ingest.client_id)) == 1
    # It stopped acknowledging: no acks in the outage's last 27 s, in flight held at the bound.
    assert acked_late == acked_early, (acked_early, acked_late)
    assert unacked_at_end == receive_max
    assert held <= receive_max
    if broker_honours_receive_maximum():
        assert conn.max_unacked <= receive_max
    # It retried with backoff (capped), not in a tight loop.
    assert 3 <= len(delays) <= 20, delays
    assert delays == sorted(delays) and max(delays) <= 10.0, delays


def _overrun_note(on_wire: int, bound: int) -> str:
    if on_wire <= bound:
        return ""
    version = ".".join(map(str, broker_version()))
    return f" (Mosquitto {version} itself sent up to {on_wire} unacked)"


def test_slow_database(scenario: Scenario) -> None:
    """Latency on every database round trip: the backlog waits in the broker, the unacked
    messages stay within the configured Receive Maximum, memory stays flat, and the broker
    connection (keepalive 5 s) is never dropped."""
    receive_max = 100
    pad = 4000  # 4 kB payloads: an ingest that buffered the backlog would grow visibly
    stream = scenario.stream(4000, pad=pad)
    tap, tap_url = scenario.broker_tap()
    _, slow_db = scenario.slow_database(0.03)
    ingest = scenario.ingest(
        "solo",
        mqtt_url=tap_url,
        database_url=slow_db,
        TERRITORY_MQTT_RECEIVE_MAXIMUM=receive_max,
        TERRITORY_MQTT_KEEPALIVE_S=5,
    )
    ingest.start()
    conn = tap.by_client(ingest.client_id)[-1]
    pub = scenario.publisher()
    job = PublishJob(pub, stream.messages(), rate=1000)

    # (rss kB, unacked, published and acked by the broker - acked by the ingest)
    samples: list[tuple[int, int, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set() and ingest.alive:
            samples.append(
                (ingest.rss_kb(), len(conn.snapshot_unacked()), len(pub.acked()) - conn.acked)
            )
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    job.start()
    job.finish()
    published = pub.wait_all_acked(60)
    settle(scenario.database_url, stream, len(published), 0, timeout=120)
    done.set()
    sampler.join()
    c = census(scenario.database_url, stream, published)

    code, _ = ingest.terminate()
    held = ingest.max_unacked_held()

    # Memory from the moment the window was first full (warm) to the end of the backlog.
    full = next(i for i, s in enumerate(samples) if s[1] >= receive_max)
    rss = [s[0] for s in samples[full:]]
    backlog_max = max(s[2] for s in samples)
    growth_mb = (max(rss) - rss[0]) / 1024
    report.record(
        "slow database (+30 ms each way)",
        c,
        f"the ingest held at most {held} unacked (bound {receive_max})"
        f"{_overrun_note(conn.max_unacked, receive_max)}; RSS {rss[0] / 1024:.0f} MB -> max "
        f"{max(rss) / 1024:.0f} MB while up to {backlog_max} messages "
        f"({backlog_max * pad / 1e6:.0f} MB) waited; one broker connection, keepalive 5 s",
    )
    assert (c.lost, c.duplicated, c.unexpected) == (0, 0, 0), c.detail
    assert c.published == c.stored == stream.count
    assert code == 0
    assert held <= receive_max
    if broker_honours_receive_maximum():
        assert conn.max_unacked <= receive_max
    assert backlog_max > 10 * receive_max  # the window, not the ingest's speed, held it back
    assert growth_mb < 5, [s[0] for s in samples]
    assert ingest.connects() == 1 and ingest.disconnects() == 0, ingest.tail()
    assert len(tap.by_client(ingest.client_id)) == 1
    assert conn.server_disconnect_reason is None


def test_database_connections_black_holed(scenario: Scenario) -> None:
    """The ingest's database connections go silent for good, without an error or a reset
    (a failover behind a virtual IP, a NAT that dropped its state), while new connections
    work. The statement in progress is abandoned after TERRITORY_DB_COMMAND_TIMEOUT_S and the
    batch retried on a new connection; nothing is lost or stored twice, even though the
    abandoned statement may have committed."""
    timeout_s = 3
    stream = scenario.stream(4000)
    proxy, db_url = scenario.slow_database(0.0)  # no delay: a plain relay to cut
    ingest = scenario.ingest("solo", database_url=db_url, TERRITORY_DB_COMMAND_TIMEOUT_S=timeout_s)
    ingest.start()
    pid = ingest.pid
    pub = scenario.publisher()
    job = PublishJob(pub, stream.messages(), rate=500)
    job.start()

    job.wait_sent(1000)
    stalled = proxy.stall_existing()
    stalled_at = time.monotonic()
    # The timeout surfaces as TimeoutError, or, when it struck inside the transaction, as the
    # InterfaceError of rolling back on the connection asyncpg has just aborted.
    abandoned = re.compile(r"write failed \((TimeoutError|InterfaceError)")
    wait_for(lambda: abandoned.search(ingest.log()), 30, 0.2, "a statement abandoned")
    noticed_after = time.monotonic() - stalled_at
    c = finish_and_count(scenario.database_url, job, stream)
    code, _ = ingest.terminate()
    report.record(
        "database connections black-holed for good",
        c,
        f"{stalled} connection(s) stalled; the first statement abandoned {noticed_after:.1f} s "
        f"later (command timeout {timeout_s} s), the batch retried on a new connection",
    )
    assert stalled >= 1
    assert (c.lost, c.duplicated, c.unexpected) == (0, 0, 0), c.detail
    assert c.published == c.stored == stream.count
    assert noticed_after < timeout_s + 5
    assert code == 0 and ingest.pid == pid, ingest.tail()

"""What the stream itself carries: poison messages, and the same readings replayed."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from tests.faults import report
from tests.faults.harness import (
    PublishJob,
    Scenario,
    census,
    rejected_count,
    settle,
    shuffled,
    sql,
    stored_count,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def test_one_percent_poison(scenario: Scenario) -> None:
    """Every valid reading stored, every poison message in rejected_messages with its reason,
    published = stored + rejected, and the ingest never stalls on the poison."""
    stream = scenario.stream(10_000, poison_every=100)
    ingest = scenario.ingest("solo")
    ingest.start()
    pub = scenario.publisher()
    rate = 1000
    job = PublishJob(pub, stream.messages(), rate=rate)

    progress: list[tuple[float, int, int]] = []  # (t, published, stored + rejected)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            progress.append(
                (
                    time.monotonic(),
                    len(pub.acked()),
                    stored_count(scenario.database_url, stream)
                    + rejected_count(scenario.database_url, stream.prefix),
                )
            )
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    job.start()
    sampler.start()
    job.finish()
    published = pub.wait_all_acked(60)
    poison = sum(m.poison is not None for m in published)
    settle(scenario.database_url, stream, len(published) - poison, poison, timeout=60)
    done.set()
    sampler.join()
    c = census(scenario.database_url, stream, published)

    # Longest time without progress while messages were waiting to be processed.
    stall, since = 0.0, progress[0][0]
    for (_, _, done0), (t1, pub1, done1) in itertools.pairwise(progress):
        if done1 > done0 or done1 >= pub1:
            since = t1
        stall = max(stall, t1 - since)
    lag = max(p - d for _, p, d in progress)
    reasons = sql(
        scenario.database_url,
        "SELECT reason, count(*) AS n FROM rejected_messages WHERE starts_with(topic, $1) "
        "GROUP BY reason ORDER BY reason",
        stream.prefix + "/",
    )
    code, _ = ingest.terminate()
    by_reason = ", ".join(f"{r['reason']}={r['n']}" for r in reasons)
    report.record(
        "1% poison messages",
        c,
        f"rejected by reason: {by_reason}; "
        f"longest stall {stall:.2f} s, largest lag {lag} messages at {rate} msg/s",
    )
    assert (c.lost, c.duplicated, c.unexpected) == (0, 0, 0), c.detail
    assert poison == stream.count // 100
    assert c.published == c.stored + c.rejected == stream.count
    assert c.rejected == poison
    assert stall < 3.0, stall
    assert code == 0


def test_replay_shuffled_three_times_is_one_in_order_run(scenario: Scenario) -> None:
    """The same readings published three times over in random order leave exactly the table a
    single in-order run leaves."""
    n = 3000
    once = scenario.stream(n, devices=10, tag="a")
    thrice = scenario.stream(n, devices=10, tag="b")
    thrice.base = once.base
    ingest = scenario.ingest("solo")
    ingest.start()
    pub = scenario.publisher()
    PublishJob(pub, once.messages(), rate=2000).run()
    replay = shuffled(thrice.messages() * 3, seed=20261126)
    PublishJob(pub, replay, rate=2000).run()
    published = pub.wait_all_acked(60)
    settle(scenario.database_url, once, n, 0, timeout=60)
    settle(scenario.database_url, thrice, n, 0, timeout=60)

    c_once = census(scenario.database_url, once, published[:n])
    c = census(scenario.database_url, thrice, published[n:])

    def table(devices: list[str]) -> list[tuple[object, ...]]:
        rows = sql(
            scenario.database_url,
            "SELECT device_id, ts, index_m3, flow_m3h, battery_pct, alarms, temperature_c, "
            "battery_v, rssi_dbm, snr_db, frame_counter, gateway_id "
            "FROM water_meter_readings WHERE device_id = ANY($1::text[]) ORDER BY device_id, ts",
            devices,
        )
        index = {d: i for i, d in enumerate(devices)}
        return [(index[r[0]], *tuple(r)[1:]) for r in rows]

    same = table(once.devices) == table(thrice.devices)
    code, _ = ingest.terminate()
    absorbed = sum(s.duplicates for s in ingest.final_stats())
    report.record(
        "replay: 3x shuffled vs 1x in order",
        c,
        f"{c.published} publishes of {n} readings; table identical to the in-order run's "
        f"({c_once.stored} rows): {same}; {absorbed} redundant copies absorbed by the key",
    )
    assert (c_once.lost, c_once.duplicated, c_once.unexpected) == (0, 0, 0), c_once.detail
    assert (c.lost, c.duplicated, c.unexpected) == (0, 0, 0), c.detail
    assert c_once.stored == c.stored == n and c.published == 3 * n
    assert same
    assert absorbed == 2 * n
    assert code == 0

"""Ingest processes dying: SIGKILL of a lone process, of one member of a shared group, and of a
member that never comes back."""

from __future__ import annotations

import time

import pytest

from tests.faults import report
from tests.faults.harness import (
    PublishJob,
    Scenario,
    census,
    finish_and_count,
    idle,
    seq_of,
    settle,
    stored_count,
    stored_seqs,
    wait_for,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def test_sigkill_mid_stream_then_restart(scenario: Scenario) -> None:
    stream = scenario.stream(6000)
    tap, tap_url = scenario.broker_tap()
    ingest = scenario.ingest("solo", mqtt_url=tap_url)
    ingest.start()
    pub = scenario.publisher()
    job = PublishJob(pub, stream.messages(), rate=1000)
    job.start()

    job.wait_sent(2500)
    wait_for(lambda: stored_count(scenario.database_url, stream) > 500, 30, what="first rows")
    ingest.kill()
    conn = tap.by_client(ingest.client_id)[-1]
    wait_for(lambda: conn.closed_at, 10, what="the killed connection closed")
    in_flight = len(conn.snapshot_unacked())  # what the broker had sent and never got acked
    job.wait_sent(4000)
    ingest.start()
    c = finish_and_count(scenario.database_url, job, stream)
    redelivered = sum(d.dup for d in tap.by_client(ingest.client_id)[-1].deliveries)
    report.record(
        "SIGKILL lone ingest, restart",
        c,
        f"{in_flight} unacked in flight at the kill; {redelivered} redelivered (DUP) after",
    )
    assert (c.lost, c.duplicated, c.unexpected) == (0, 0, 0), c.detail
    assert c.published == c.stored == stream.count
    assert redelivered >= in_flight  # the broker kept what was in flight for the session
    assert ingest.terminate()[0] == 0


def test_shared_group_member_killed_and_restarted(scenario: Scenario) -> None:
    """Three processes share the stream; one is killed and comes back with its client id a
    little later while the other two carry on; then a fourth joins."""
    stream = scenario.stream(14_000)
    tap, tap_url = scenario.broker_tap()
    members = [scenario.ingest(f"m{i}", group="g", mqtt_url=tap_url) for i in range(3)]
    for m in members:
        m.start()
    pub = scenario.publisher()
    job = PublishJob(pub, stream.messages(range(12_000)), rate=1000)
    job.start()

    victim = members[1]
    job.wait_sent(3000)
    victim.kill()
    conn = tap.by_client(victim.client_id)[-1]
    wait_for(lambda: conn.closed_at, 10, what="the killed connection closed")
    in_flight = len(conn.snapshot_unacked())
    stored_at_kill = stored_count(scenario.database_url, stream)
    job.wait_sent(6000)
    stored_meanwhile = stored_count(scenario.database_url, stream) - stored_at_kill
    victim.start()
    # Scaling out is starting one more process with its own client id: nothing else changes.
    newcomer = scenario.ingest("m3", group="g", mqtt_url=tap_url)
    newcomer.start()
    job.finish()
    PublishJob(pub, stream.messages(range(12_000, 14_000)), rate=1000).run()
    published = pub.wait_all_acked(60)
    settle(scenario.database_url, stream, len(published), 0, timeout=60)

    c = census(scenario.database_url, stream, published)
    redelivered = sum(d.dup for d in tap.by_client(victim.client_id)[-1].deliveries)
    to_newcomer = len(tap.by_client(newcomer.client_id)[-1].deliveries)
    report.record(
        "shared group of 3, one SIGKILLed, back later",
        c,
        f"{in_flight} in flight to the victim at the kill, {redelivered} redelivered to it "
        f"(DUP) on its return; the other two stored {stored_meanwhile} while it was away; a "
        f"4th process joining mid-stream took {to_newcomer}",
    )
    assert (c.lost, c.duplicated, c.unexpected) == (0, 0, 0), c.detail
    assert c.published == c.stored == stream.count
    assert redelivered >= in_flight
    # The other two carried on: about two thirds of the ~3,000 published meanwhile.
    assert stored_meanwhile > 1000
    assert to_newcomer > 300  # a quarter of what was published after it joined: 500 or more
    for m in [*members, newcomer]:
        assert m.terminate()[0] == 0, m.tail()


def test_shared_group_member_that_never_returns(scenario: Scenario) -> None:
    """What happens to the messages dealt to a member that dies and does not come back.

    Finding (Mosquitto 2.0): the broker keeps dealing a share of the stream round-robin to the
    dead member's persistent session, and keeps the messages that were in flight to it there
    too. None of them goes to the surviving members: they wait in that session until a process
    connects with the dead member's client id (remedy: start one, on any host), or are lost
    when the session expires.
    """
    stream = scenario.stream(6000)
    tap, tap_url = scenario.broker_tap()
    # A slow database keeps a window of messages in flight to each member.
    _, slow_db = scenario.slow_database(0.005)
    members = [
        scenario.ingest(f"m{i}", group="g", mqtt_url=tap_url, database_url=slow_db)
        for i in range(3)
    ]
    for m in members:
        m.start()
    pub = scenario.publisher()
    job = PublishJob(pub, stream.messages(), rate=1000)
    job.start()

    victim, survivors = members[2], members[:2]
    job.wait_sent(2000)
    victim.kill()
    conn = tap.by_client(victim.client_id)[-1]
    wait_for(lambda: conn.closed_at, 10, what="the killed connection closed")
    in_flight = {seq_of(d.payload) for d in conn.in_flight()}
    sent_at_kill = job.sent
    job.finish()
    published = pub.wait_all_acked(60)
    after_kill = len(published) - sent_at_kill

    # The survivors drain what is theirs, then go idle with messages still missing.
    def to_survivors() -> set[int]:
        return {
            seq_of(d.payload)
            for m in survivors
            for c in tap.by_client(m.client_id)
            for d in c.deliveries
        }

    wait_for(
        lambda: to_survivors() <= set(stored_seqs(scenario.database_url, stream)),
        60,
        0.5,
        "what the survivors received stored",
    )
    stored = idle(lambda: stored_count(scenario.database_url, stream), quiet_s=3, timeout=60)
    missing = set(range(stream.count)) - set(stored_seqs(scenario.database_url, stream))
    stranded = len(missing)
    # Some of those in flight may be stored: committed, then killed before the PUBACK went out.
    committed_unacked = len(in_flight - missing)
    assert not (missing | in_flight) & to_survivors(), "the survivors got the dead one's share"
    # Round-robin over three sessions, connected or not: a third of what came after the kill.
    assert stranded >= after_kill // 3 - 5, (stranded, after_kill)
    # Waiting does not help: nothing is redistributed.
    time.sleep(5)
    assert stored_count(scenario.database_url, stream) == stored

    # The remedy: any process with the dead member's client id gets its session back.
    heir = scenario.ingest("m2", group="g", mqtt_url=tap_url, database_url=slow_db)
    heir.start()
    settle(scenario.database_url, stream, len(published), 0, timeout=60)
    c = census(scenario.database_url, stream, published)
    heir_conn = tap.by_client(heir.client_id)[-1]
    redelivered = {seq_of(d.payload) for d in heir_conn.deliveries if d.dup}
    report.record(
        "shared group of 3, one SIGKILLed for good",
        c,
        f"{stranded} stranded in the dead member's session (its round-robin share of the "
        f"{after_kill} published after the kill, and what was in flight to it: "
        f"{len(in_flight)}, {committed_unacked} of them committed but not acked), none given "
        f"to the survivors; all stored once a process took its client id back "
        f"({len(redelivered)} redelivered with DUP)",
    )
    assert in_flight <= redelivered
    assert (c.lost, c.duplicated, c.unexpected) == (0, 0, 0), c.detail
    assert c.published == c.stored == stream.count
    for m in [*survivors, heir]:
        assert m.terminate()[0] == 0, m.tail()


def test_shared_group_member_killed_then_retired(scenario: Scenario) -> None:
    """The lossless way to remove a member: `territory ingest --retire` with its client id.

    A group of two; one member is SIGKILLed while messages flow, so its session holds what
    was in flight to it and its round-robin share of what follows. The retiring process
    resumes that session, unsubscribes (no new share), stores and acknowledges everything the
    session held, then ends the session (session expiry 0): from then on the survivor gets
    every message, and nothing is left in the broker."""
    stream = scenario.stream(8000)
    tap, tap_url = scenario.broker_tap()
    # A slow database keeps a window of messages in flight to each member.
    _, slow_db = scenario.slow_database(0.005)
    members = [
        scenario.ingest(f"m{i}", group="g", mqtt_url=tap_url, database_url=slow_db)
        for i in range(2)
    ]
    for m in members:
        m.start()
    pub = scenario.publisher()
    job = PublishJob(pub, stream.messages(), rate=800)
    job.start()

    survivor, victim = members
    job.wait_sent(2000)
    victim.kill()
    conn = tap.by_client(victim.client_id)[-1]
    wait_for(lambda: conn.closed_at, 10, what="the killed connection closed")
    in_flight = {seq_of(d.payload) for d in conn.in_flight()}
    job.wait_sent(4000)  # meanwhile, half of what is published is dealt to the dead session
    code, took = victim.retire(timeout=90)
    retired_at = job.sent
    retire_conn = tap.by_client(victim.client_id)[-1]
    to_retirer = {seq_of(d.payload) for d in retire_conn.deliveries}
    redelivered = {seq_of(d.payload) for d in retire_conn.deliveries if d.dup}
    c = finish_and_count(scenario.database_url, job, stream)
    # After its session ended, every message went to the survivor.
    survivor_got = {
        seq_of(d.payload) for cn in tap.by_client(survivor.client_id) for d in cn.deliveries
    }
    after = set(range(retired_at, stream.count))
    report.record(
        "shared group of 2, one SIGKILLed, then retired",
        c,
        f"{len(in_flight)} in flight to the victim at the kill; --retire took {took:.1f} s and "
        f"stored {len(to_retirer)} messages its session held ({len(redelivered)} redelivered "
        f"with DUP), then ended the session; the survivor got all {len(after)} published after",
    )
    assert code == 0, victim.tail()
    assert "its session is ended" in victim.log(), victim.tail()
    assert in_flight <= redelivered
    assert len(to_retirer) > 500  # its share of what was published while it was dead
    assert after <= survivor_got
    assert (c.lost, c.duplicated, c.unexpected) == (0, 0, 0), c.detail
    assert c.published == c.stored == stream.count
    assert survivor.terminate()[0] == 0, survivor.tail()

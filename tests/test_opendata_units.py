"""Open data pieces without I/O: identifiers, the waste status, CSV, month bounds, the answer
cache and the token bucket."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from api import opendata_format as fmt
from api.opendata_cache import AnswerCache, RateLimiter, etag_matches, retry_after
from api.routes_opendata import _month_bounds
from devices.attributes import WASTE_STREAMS
from storage.opendata import ParkingZone, WasteColumn

T = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)


def test_urn_parts_are_percent_encoded() -> None:
    assert (
        fmt.urn("ParkingGroup", "rennes", "gare-sud") == "urn:ngsi-ld:ParkingGroup:rennes:gare-sud"
    )
    # A colon or a space inside a name can neither add a segment nor break the URN.
    assert (
        fmt.urn("WaterConsumptionObserved", "t", "Saint-Hélier: nord", "2026-02")
        == "urn:ngsi-ld:WaterConsumptionObserved:t:Saint-H%C3%A9lier%3A%20nord:2026-02"
    )


def _column(**kw: object) -> WasteColumn:
    base: dict[str, object] = {
        "tenant": "t",
        "device_id": "col-1",
        "lat": 48.1,
        "lon": -1.6,
        "stream": "glass",
        "fill_pct": 42.0,
        "fill_ts": T,
        "last_reading_ts": T,
        "alarms": (),
        "threshold_pct": 80.0,
        "eta_threshold": None,
        "last_emptied": None,
    }
    base.update(kw)
    return WasteColumn(**base)  # type: ignore[arg-type]


def test_waste_status_from_the_newest_alarms() -> None:
    assert fmt.waste_status(_column()) == "ok"
    assert fmt.waste_status(_column(alarms=("lid_open",))) == "lidOpen"
    assert fmt.waste_status(_column(alarms=("tilt",))) == "dropped"
    # Fire outranks everything else the reading says.
    assert fmt.waste_status(_column(alarms=("lid_open", "fire", "tilt"))) == "burning"
    assert fmt.waste_status(_column(last_reading_ts=None, fill_pct=None)) == "unknown"


# WasteContainer's `storedWasteKind` enumeration (Smart Data Models, dataModel.WasteManagement).
STORED_WASTE_KINDS = {
    "organic",
    "inorganic",
    "glass",
    "oil",
    "plastic",
    "metal",
    "paper",
    "batteries",
    "electronics",
    "hazardous",
    "other",
}


def test_every_waste_stream_is_published_with_a_kind_of_the_model() -> None:
    # The streams a column may be registered with are devices/attributes.py's list; the
    # open-data table follows it, nothing more and nothing less.
    assert set(fmt.WASTE_KIND) == set(WASTE_STREAMS)
    for stream in WASTE_STREAMS:
        values = fmt.waste_entity(_column(stream=stream)).values
        assert values["storedWasteKind"] in STORED_WASTE_KINDS, stream
    # A column with no stream (or one the registry no longer allows) says nothing of its kind.
    assert "storedWasteKind" not in fmt.waste_entity(_column(stream=None)).values


def test_filling_level_is_a_fraction_clamped_to_the_model_range() -> None:
    assert fmt.waste_entity(_column(fill_pct=42.0)).values["fillingLevel"] == 0.42
    assert fmt.waste_entity(_column(fill_pct=104.0)).values["fillingLevel"] == 1.0
    assert "fillingLevel" not in fmt.waste_entity(_column(fill_pct=None)).values


def test_csv_is_semicolon_separated_with_empty_cells_for_no_value() -> None:
    z = ParkingZone("t", "Gare; sud", 3, 1, 1, 1, None, None, None)
    text = fmt.csv_text(fmt.PARKING_CSV, [fmt.parking_entity(z)])
    header, row, end = text.split("\r\n")
    assert header == ";".join(fmt.PARKING_CSV)
    # The zone holds the separator: quoted. 1 occupied of 2 known: 0.5; no time, no place.
    assert row == 'urn:ngsi-ld:ParkingGroup:t:Gare%3B%20sud;t;"Gare; sud";3;1;1;1;0.5;;;'
    assert end == ""


def test_month_bounds_follow_local_time_across_the_clock_change() -> None:
    # March 2026 in Paris: from 1 March 00:00 CET (+01) to 1 April 00:00 CEST (+02).
    assert _month_bounds("2026-03", "Europe/Paris") == (
        datetime(2026, 2, 28, 23, tzinfo=UTC),
        datetime(2026, 3, 31, 22, tzinfo=UTC),
    )
    assert _month_bounds("2026-12", "Europe/Paris") == (
        datetime(2026, 11, 30, 23, tzinfo=UTC),
        datetime(2026, 12, 31, 23, tzinfo=UTC),
    )


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_answer_cache_expires_and_keeps_last_modified_for_the_same_body() -> None:
    clock = Clock()
    cache = AnswerCache(5.0, max_entries=2, clock=clock)
    key = ("/open/x", "")
    first = cache.put(key, b"a", "text/csv", T)
    assert cache.get(key) == first
    clock.t += 5.0
    assert cache.get(key) is None
    later = datetime(2026, 3, 2, 9, tzinfo=UTC)
    # Rebuilt with the same body: unmodified since the first time.
    assert cache.put(key, b"a", "text/csv", later).last_modified == T
    assert cache.put(key, b"b", "text/csv", later).last_modified == later
    cache.put(("/open/y", ""), b"y", "text/csv", T)
    cache.put(("/open/z", ""), b"z", "text/csv", T)
    assert cache.get(key) is None  # evicted: at most two entries


def test_etag_comparison_is_weak_and_takes_lists() -> None:
    assert etag_matches('"abc"', '"abc"')
    assert etag_matches('W/"abc"', '"abc"')
    assert etag_matches('"x", "abc"', '"abc"')
    assert etag_matches("*", '"abc"')
    assert not etag_matches('"abcd"', '"abc"')
    assert not etag_matches(None, '"abc"')


def test_token_bucket_refills_at_its_rate_per_client() -> None:
    clock = Clock()
    rl = RateLimiter(rate_per_s=2.0, burst=3, clock=clock)
    assert [rl.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rl.take("a") == 0.5  # one token back at 2 per second
    assert rl.take("b") == 0.0
    clock.t += 0.5
    assert rl.take("a") == 0.0
    assert rl.take("a") == 0.5
    clock.t += 100
    assert [rl.take("a") for _ in range(4)][-1] == 0.5  # never more than the burst
    assert retry_after(0.2) == "1" and retry_after(2.0) == "2" and retry_after(2.1) == "3"


def test_the_client_table_is_bounded() -> None:
    clock = Clock()
    rl = RateLimiter(rate_per_s=1.0, burst=2, max_clients=3, clock=clock)
    for c in ("a", "b", "c"):
        rl.take(c)
    clock.t += 10  # every bucket is full again: forgetting them loses nothing
    rl.take("d")
    assert rl.take("d") == 0.0
    assert rl.take("d") > 0


# --- one build per key at a time -------------------------------------------------------------


def _state() -> Any:
    from api.routes_opendata import OpenState

    return OpenState(AnswerCache(60.0), RateLimiter(1.0, 1))


def test_requests_missing_together_share_one_build() -> None:
    from api.routes_opendata import _cached_or_built

    st = _state()
    builds = 0

    async def build() -> tuple[bytes, str]:
        nonlocal builds
        builds += 1
        await asyncio.sleep(0.05)
        return b"body", "text/csv"

    async def go() -> list[Any]:
        return list(
            await asyncio.gather(*(_cached_or_built(st, ("/p", ""), build) for _ in range(20)))
        )

    entries = asyncio.run(go())
    assert builds == 1
    assert {e.body for e in entries} == {b"body"}
    assert st.building == {}


def test_a_failed_build_fails_its_waiters_and_is_not_cached() -> None:
    from api.routes_opendata import _cached_or_built

    st = _state()

    async def build() -> tuple[bytes, str]:
        await asyncio.sleep(0.02)
        raise LookupError("no such tenant")

    async def go() -> list[Any]:
        return list(
            await asyncio.gather(
                *(_cached_or_built(st, ("/p", ""), build) for _ in range(5)),
                return_exceptions=True,
            )
        )

    results = asyncio.run(go())
    assert all(isinstance(r, LookupError) for r in results)
    assert st.cache.get(("/p", "")) is None and st.building == {}


def test_a_waiter_builds_when_the_builder_is_cancelled() -> None:
    from api.routes_opendata import _cached_or_built

    st = _state()
    calls = 0

    async def build() -> tuple[bytes, str]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return b"x", "text/csv"

    async def go() -> bytes:
        first = asyncio.create_task(_cached_or_built(st, ("/p", ""), build))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(_cached_or_built(st, ("/p", ""), build))
        await asyncio.sleep(0.01)
        first.cancel()  # the client of the first request went away
        entry = await second
        return bytes(entry.body)

    assert asyncio.run(go()) == b"x"
    assert calls == 2

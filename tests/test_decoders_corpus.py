"""Every device test vector with bytes, through its decoder as a pure function (no I/O).

The same expectations hold the samples through MQTT, ingest and API in test_corpus_e2e.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from devices.decoders import DECODERS
from devices.decoders.ranges import check_ranges
from devices.rejections import Rejection, RejectReason
from tests.corpus_support import Vector, all_expectations, assert_reading_matches, uplink_for

NOW = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
BYTE_SAMPLES = [e for e in all_expectations() if e.decoder]


@pytest.mark.parametrize("exp", BYTE_SAMPLES, ids=[e.file for e in BYTE_SAMPLES])
def test_corpus_sample_decodes_to_its_published_values(exp: Vector) -> None:
    decoder = DECODERS[exp.decoder]
    uplink = uplink_for(exp, NOW)
    if exp.reject is not None:
        with pytest.raises(Rejection) as info:
            for r in decoder.decode(uplink):
                check_ranges(r)
        assert info.value.reason == RejectReason(exp.reject)
        return
    assert exp.readings is not None
    got = decoder.decode(uplink)
    for r in got:
        check_ranges(r)
        assert r.kind is decoder.info.kind
        assert r.ts.tzinfo is not None
    expected = exp.readings
    assert len(got) == len(expected)
    if not any("ts" in e for e in expected):
        assert [r.ts for r in got] == [NOW - exp.age] * len(got)
    for reading, want in zip(got, expected, strict=True):
        assert_reading_matches(reading, want)

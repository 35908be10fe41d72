"""The plausible range of reading times (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devices.rejections import Rejection, RejectReason
from devices.timestamps import check_reading_time

RECEIVED = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ts", "reason"),
    [
        (datetime(1, 1, 1, tzinfo=UTC), RejectReason.IMPLAUSIBLE_TIMESTAMP),  # -infinity in SQL
        (datetime(1900, 1, 1, tzinfo=UTC), RejectReason.IMPLAUSIBLE_TIMESTAMP),
        (datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), RejectReason.IMPLAUSIBLE_TIMESTAMP),
        (RECEIVED - timedelta(days=3654), RejectReason.IMPLAUSIBLE_TIMESTAMP),
        (RECEIVED + timedelta(minutes=10, seconds=1), RejectReason.FUTURE_TIMESTAMP),
        (datetime(9999, 12, 31, tzinfo=UTC), RejectReason.FUTURE_TIMESTAMP),
    ],
)
def test_times_out_of_bounds(ts: datetime, reason: RejectReason) -> None:
    with pytest.raises(Rejection) as info:
        check_reading_time(ts, RECEIVED)
    assert info.value.reason == reason


def test_times_within_bounds() -> None:
    for ts in (
        RECEIVED - timedelta(days=3652),
        RECEIVED + timedelta(minutes=10),
        RECEIVED,
    ):
        check_reading_time(ts, RECEIVED)
    # The look-back is configurable, the 2000 floor is not.
    with pytest.raises(Rejection):
        check_reading_time(RECEIVED - timedelta(days=2), RECEIVED, past_tolerance=timedelta(1))
    with pytest.raises(Rejection):
        check_reading_time(
            datetime(1999, 1, 1, tzinfo=UTC), RECEIVED, past_tolerance=timedelta(days=36500)
        )

"""Reading times: the accepted text form and the plausible range.

Every source's times (native `ts`, network-server reception times, a decoder's own timestamps)
go through `check_reading_time` on the ingest path, so a device clock reset to 1970, a year-1
placeholder (stored as `-infinity` by the database driver) or a time far in the future never
becomes a reading.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from devices.rejections import Rejection, RejectReason

# RFC 3339 date-time: full date, "T" (or the space RFC 3339 allows), a time with seconds and an
# optional fraction, and an offset. Not an epoch number, not a date alone, not a naive time.
RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,12})?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
# The same, for pydantic's pattern constraint (Rust regex: [0-9], not \d, which is Unicode).
TS_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,12})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_NAIVE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?", re.ASCII)

# No reading of this platform's devices predates it, whatever the configured look-back.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
DEFAULT_PAST_TOLERANCE = timedelta(days=3653)  # ten years: a meter's long backfill, not 1900
DEFAULT_FUTURE_TOLERANCE = timedelta(minutes=10)


def rfc3339_problem(value: str) -> str | None:
    """Why `value` is not an RFC 3339 date-time with an offset, or None when it is one."""
    text = value.strip()
    if RFC3339.fullmatch(text):
        return None
    if _NAIVE.fullmatch(text):
        return "has no UTC offset"
    return "is not an RFC 3339 date-time"


def parse_rfc3339(value: str) -> datetime:
    """An RFC 3339 date-time (any number of fractional digits: network servers send
    nanoseconds, read to the microsecond); ValueError saying why otherwise."""
    problem = rfc3339_problem(value)
    if problem is not None:
        raise ValueError(problem)
    # Python 3.11's fromisoformat reads "Z" and more than 6 fractional digits itself.
    text = value.strip().upper()
    try:
        return datetime.fromisoformat(text)
    except ValueError:  # month 13, hour 25
        raise ValueError("is not a valid date-time") from None


def check_reading_time(
    ts: datetime,
    received_at: datetime,
    *,
    future_tolerance: timedelta = DEFAULT_FUTURE_TOLERANCE,
    past_tolerance: timedelta = DEFAULT_PAST_TOLERANCE,
) -> None:
    """Raise `Rejection` unless `ts` lies in [max(EARLIEST, received - past), received + future]."""
    if ts - received_at > future_tolerance:
        raise Rejection(
            RejectReason.FUTURE_TIMESTAMP,
            f"ts {ts.isoformat()} is more than {future_tolerance} ahead of the time received "
            f"{received_at.isoformat()}",
        )
    if ts < EARLIEST or received_at - ts > past_tolerance:
        raise Rejection(
            RejectReason.IMPLAUSIBLE_TIMESTAMP,
            f"ts {ts.isoformat()} is before {EARLIEST.date().isoformat()} or more than "
            f"{past_tolerance.days} days before the time received {received_at.isoformat()}",
        )

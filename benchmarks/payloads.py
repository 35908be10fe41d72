"""The benchmark's messages: native readings whose `ts` is the moment they were published.

Every generator here hands out strictly increasing microsecond timestamps, so two messages to
the same device never share a `(device_id, ts)` key (the ingest would store one of them), and
the publish time can be read back from the stored row to measure publish-to-commit latency.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

KINDS = ("water_meter", "waste_column", "parking_sensor")


def device_id(prefix: str, index: int) -> str:
    return f"{prefix}-{index:06d}"


def kind_of(index: int) -> str:
    """Devices are a fixed mix: one in three of each kind, by index."""
    return KINDS[index % 3]


class Clock:
    """Strictly increasing microsecond timestamps, as close to the wall clock as that allows."""

    def __init__(self) -> None:
        self._last_us = 0
        self._second = -1
        self._prefix = b""

    def next_us(self) -> int:
        now_us = time.time_ns() // 1000
        if now_us <= self._last_us:
            now_us = self._last_us + 1
        self._last_us = now_us
        return now_us

    def rfc3339(self, us: int) -> bytes:
        second, micro = divmod(us, 1_000_000)
        if second != self._second:
            self._second = second
            self._prefix = (
                datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S").encode()
            )
        return b"%s.%06dZ" % (self._prefix, micro)


def payload(index: int, seq: int, ts: bytes) -> bytes:
    """A valid native payload for device `index`, the `seq`-th message overall."""
    k = index % 3
    battery = 40 + seq % 60
    if k == 0:
        # A plausible meter: its index rises one litre at a time (a litre every 60,000
        # messages overall, ~1 m³/h per meter at 20,000 msg/s, whatever the number of meters),
        # so that the water analytics see ordinary flow, not a spike in every interval.
        litres = seq // 60_000
        return b'{"ts":"%s","index_m3":%d.%03d,"flow_m3h":0.%02d,"battery_pct":%d}' % (
            ts,
            1000 + litres // 1000,
            litres % 1000,
            seq % 100,
            battery,
        )
    if k == 1:
        return b'{"ts":"%s","fill_pct":%d.5,"temperature_c":11.5,"battery_pct":%d}' % (
            ts,
            seq % 100,
            battery,
        )
    return b'{"ts":"%s","occupied":%s,"battery_pct":%d}' % (
        ts,
        b"true" if seq % 2 else b"false",
        battery,
    )

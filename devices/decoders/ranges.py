"""Physical plausibility of decoded readings, checked for every decoder's output.

Bounds are generous: they catch bytes read with the wrong layout or sign (a -117 °C parking
sensor), not unusual but real conditions.
"""

from __future__ import annotations

from dataclasses import fields

from devices.readings import Reading
from devices.rejections import Rejection, RejectReason

BOUNDS: dict[str, tuple[float, float]] = {
    "index_m3": (0, 1e9),
    "flow_m3h": (-1e4, 1e4),
    "battery_pct": (0, 100),
    "battery_v": (0, 40),
    "temperature_c": (-50, 100),
    "fill_pct": (0, 100),
    "distance_mm": (0, 20_000),
}


def check_ranges(reading: Reading) -> None:
    for f in fields(reading):
        bounds = BOUNDS.get(f.name)
        value = getattr(reading, f.name)
        if bounds is None or value is None:
            continue
        lo, hi = bounds
        if not lo <= value <= hi:
            raise Rejection(
                RejectReason.OUT_OF_RANGE,
                f"{f.name}={value} is outside the plausible range [{lo}, {hi}]",
            )

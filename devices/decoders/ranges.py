"""Physical plausibility of decoded readings, checked for every decoder's output.

The bounds are `devices.limits.BOUNDS`, shared with the native payload schema.
"""

from __future__ import annotations

from dataclasses import fields

from devices.limits import BOUNDS
from devices.readings import Reading
from devices.rejections import Rejection, RejectReason

_CHECKS: dict[type, tuple[tuple[str, float, float], ...]] = {}


def _checks(cls: type) -> tuple[tuple[str, float, float], ...]:
    # Runs for every reading on the ingest path: the field list is worked out once per class.
    found = _CHECKS.get(cls)
    if found is None:
        found = tuple((f.name, *BOUNDS[f.name]) for f in fields(cls) if f.name in BOUNDS)
        _CHECKS[cls] = found
    return found


def check_ranges(reading: Reading) -> None:
    """Plausible values of the right types (a decoder fed hostile JSON may pass on anything);
    NaN fails every comparison and is therefore out of range too."""
    for name, lo, hi in _checks(type(reading)):
        value = getattr(reading, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Rejection(
                RejectReason.UNDECODABLE_PAYLOAD, f"{name} is not a number: {repr(value)[:80]}"
            )
        if not lo <= value <= hi:
            raise Rejection(
                RejectReason.OUT_OF_RANGE,
                f"{name}={value} is outside the plausible range [{lo}, {hi}]",
            )
    occupied = getattr(reading, "occupied", False)
    if not isinstance(occupied, bool):
        raise Rejection(
            RejectReason.UNDECODABLE_PAYLOAD, f"occupied is not a boolean: {repr(occupied)[:80]}"
        )

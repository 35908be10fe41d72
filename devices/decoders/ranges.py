"""Physical plausibility of decoded readings, checked for every decoder's output.

The bounds are those each kind declares on its reading fields (devices/kinds/), the same the
native payload schema enforces.
"""

from __future__ import annotations

from devices.declare import spec_of
from devices.readings import Reading
from devices.rejections import Rejection, RejectReason


def check_ranges(reading: Reading) -> None:
    """Plausible values of the right types (a decoder fed hostile JSON may pass on anything);
    NaN fails every comparison and is therefore out of range too."""
    spec = spec_of(reading)
    for name, lo, hi in spec.bounds:
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
    for name in spec.flags:
        value = getattr(reading, name)
        if value is not None and not isinstance(value, bool):
            raise Rejection(
                RejectReason.UNDECODABLE_PAYLOAD, f"{name} is not a boolean: {repr(value)[:80]}"
            )

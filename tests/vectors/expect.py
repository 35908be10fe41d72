"""How an expectation for one corpus sample is written (used by `build.py` only).

Each family's expectations live in `expect_*.py` as a list `EXPECTATIONS`. An expectation maps
the values the sample's upstream source published (its `decoded` object) to the readings we
must produce, in our field names and units; `build.py` evaluates it once and writes the result
into the vector, so the tests compare decoders with fixed values and never need the corpus.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

# Published decoded values → the expected readings: a list of dicts of reading fields in
# platform names and units (a subset: fields not named are not checked).
ExpectFn = Callable[[dict[str, Any]], list[dict[str, Any]]]


@dataclass(frozen=True)
class Expect:
    file: str  # the corpus file, e.g. "fill_level/milesight_readme_em310_udl.json"
    decoder: str  # our decoder's name ("" when the network server decoded the payload)
    readings: ExpectFn | None = None  # published decoded → expected readings
    reject: str | None = None  # or: the reason code the sample must be rejected with
    attributes: dict[str, Any] = field(default_factory=dict)  # registration attributes
    divergence: str = ""  # a deliberate difference from the published values, and why
    # How much older than the uplink a reading without its own clock is (a value's age
    # field), fixed or read from the published values.
    age: timedelta | Callable[[dict[str, Any]], timedelta] = timedelta(0)

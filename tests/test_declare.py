"""What a kind declaration derives, and the mistakes it refuses, without I/O.

Each case runs in a fresh interpreter: a declared kind stays in the process's registry, and
this test process must keep the three built-in kinds only.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from devices.kinds import all_kinds, kind_spec

PRELUDE = """
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import ClassVar
from devices.declare import DeviceKind, KindAttributes, declare_kind, measure
from devices.native import decode_native
from devices.rejections import Rejection
"""


def _run(body: str) -> subprocess.CompletedProcess[str]:
    code = PRELUDE + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_built_in_kinds_derive_what_they_used_to_write_by_hand() -> None:
    assert all_kinds() == ["water_meter", "waste_column", "parking_sensor"]
    water = kind_spec("water_meter")
    assert water.table == "water_meter_readings"
    assert dict((n, (lo, hi)) for n, lo, hi in water.bounds)["index_m3"] == (0, 1e9)
    assert water.numeric_fields == (
        "index_m3",
        "flow_m3h",
        "battery_pct",
        "temperature_c",
        "battery_v",
    )
    parking = kind_spec("parking_sensor")
    assert parking.flags == ("occupied",)
    schema = parking.payload_model.model_json_schema()
    assert schema["required"] == ["occupied"]
    assert schema["properties"]["battery_pct"]["anyOf"][0] == {
        "maximum": 100,
        "minimum": 0,
        "type": "number",
    }
    waste = kind_spec("waste_column")
    # fill_pct may be left out of a native payload: the distance and depth give it.
    assert "fill_pct" not in waste.payload_model.model_json_schema().get("required", [])
    assert waste.columns_sql().startswith("fill_pct double precision NOT NULL, ")


def test_a_kind_with_one_field_decodes_its_native_payload() -> None:
    result = _run(
        """
        @dataclass(frozen=True, slots=True)
        class Level:
            ts: datetime
            level_cm: float = field(metadata=measure("River level", unit="cm", ge=0, le=2000))
            kind: ClassVar[DeviceKind]

        declare_kind("river_level", reading=Level, attributes=KindAttributes)
        now = datetime(2026, 12, 2, tzinfo=timezone.utc)
        print(decode_native(DeviceKind("river_level"), b'{"level_cm": 312}',
                            received_at=now, attributes={}))
        try:
            decode_native(DeviceKind("river_level"), b'{"level_cm": 5000}',
                          received_at=now, attributes={})
        except Rejection as rej:
            print(rej.reason, rej.detail)
        """
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert "level_cm=312.0" in first
    assert second.startswith("schema_violation level_cm") and "2000" in second


def test_declaration_mistakes_are_refused_with_their_reason() -> None:
    cases = {
        "must match": 'declare_kind("Bad Name", reading=R, attributes=KindAttributes)',
        "declared twice": 'declare_kind("water_meter", reading=R, attributes=KindAttributes)',
        "has no measure() metadata": 'declare_kind("nometa", reading=N, attributes=KindAttributes)',
        "unsupported reading field type": (
            'declare_kind("listy", reading=L, attributes=KindAttributes)'
        ),
    }
    classes = """
        import devices.kinds
        @dataclass(frozen=True)
        class R:
            ts: datetime
            x: float = field(metadata=measure("x"))
        @dataclass(frozen=True)
        class N:
            ts: datetime
            x: float = 0.0
        @dataclass(frozen=True)
        class L:
            ts: datetime
            x: list = field(default_factory=list, metadata=measure("x"))
        """
    for expected, statement in cases.items():
        result = _run(textwrap.dedent(classes) + statement)
        assert result.returncode != 0 and expected in result.stderr, (expected, result.stderr)

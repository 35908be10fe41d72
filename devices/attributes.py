"""Kind-specific registration attributes: what the platform must know about an installed device.

Each kind declares its model in its module under devices/kinds/."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from devices.declare import DeviceKind, KindAttributes, all_specs, kind_spec
from devices.kinds.parking_sensor import ParkingSensorAttributes
from devices.kinds.waste_column import WASTE_STREAMS, WasteColumnAttributes, WasteStream
from devices.kinds.water_meter import WaterMeterAttributes

_DICT = TypeAdapter(dict[str, Any])


def attribute_model(kind: DeviceKind) -> type[KindAttributes]:
    return kind_spec(kind).attributes


def attribute_names() -> list[str]:
    """Every attribute any declared kind has, sorted (the columns of a CSV import)."""
    return sorted({f for s in all_specs() for f in s.attributes.model_fields})


def validate_attributes(kind: DeviceKind, raw: object) -> dict[str, Any]:
    """Validate `raw` for `kind`; returns the normalised dict (unset values left out).

    Raises pydantic.ValidationError, whose errors carry locations an API can report.
    """
    data = _DICT.validate_python(raw if raw is not None else {})
    return attribute_model(kind).model_validate(data).model_dump(exclude_none=True)


__all__ = [
    "WASTE_STREAMS",
    "ParkingSensorAttributes",
    "ValidationError",
    "WasteColumnAttributes",
    "WasteStream",
    "WaterMeterAttributes",
    "attribute_model",
    "attribute_names",
    "validate_attributes",
]

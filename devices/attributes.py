"""Kind-specific registration attributes: what the platform must know about an installed device."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from devices.kinds import DeviceKind

WasteStream = Literal["residual", "packaging", "glass", "paper", "organic", "textile", "other"]
Label = Annotated[str, Field(min_length=1, max_length=64)]


class _Attributes(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    expected_interval_s: float | None = Field(
        default=None,
        ge=1,
        le=31 * 86400,
        description="How often the device reports, in seconds; it counts as offline after "
        "2.1 times this much silence (default per kind, docs/alerts.md).",
        examples=[3600],
    )


class WaterMeterAttributes(_Attributes):
    district: Label | None = Field(default=None, examples=["Quimper-Centre"])


class WasteColumnAttributes(_Attributes):
    depth_mm: int | None = Field(
        default=None,
        gt=0,
        le=10_000,
        description="Distance from the sensor to the bottom of the empty column; needed to turn "
        "a measured distance into a fill level.",
        examples=[1800],
    )
    capacity_l: int | None = Field(default=None, gt=0, le=100_000, examples=[4000])
    waste_stream: WasteStream | None = Field(default=None, examples=["glass"])
    threshold_pct: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="Fill level at which the column counts as full (default 80).",
        examples=[80],
    )


class ParkingSensorAttributes(_Attributes):
    zone: Label | None = Field(default=None, examples=["Parking de la Providence"])
    freshness_s: float | None = Field(
        default=None,
        ge=1,
        le=31 * 86400,
        description="Silence after which the space's state is unknown (default 6.5 h).",
        examples=[23400],
    )


ATTRIBUTE_MODELS: dict[DeviceKind, type[_Attributes]] = {
    DeviceKind.WATER_METER: WaterMeterAttributes,
    DeviceKind.WASTE_COLUMN: WasteColumnAttributes,
    DeviceKind.PARKING_SENSOR: ParkingSensorAttributes,
}

_DICT = TypeAdapter(dict[str, Any])


def validate_attributes(kind: DeviceKind, raw: object) -> dict[str, Any]:
    """Validate `raw` for `kind`; returns the normalised dict (unset values left out).

    Raises pydantic.ValidationError, whose errors carry locations an API can report.
    """
    model = ATTRIBUTE_MODELS[kind]
    data = _DICT.validate_python(raw if raw is not None else {})
    return model.model_validate(data).model_dump(exclude_none=True)


__all__ = [
    "ATTRIBUTE_MODELS",
    "ParkingSensorAttributes",
    "ValidationError",
    "WasteColumnAttributes",
    "WaterMeterAttributes",
    "validate_attributes",
]

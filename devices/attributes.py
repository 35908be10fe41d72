"""Kind-specific registration attributes: what the platform must know about an installed device."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from devices.kinds import DeviceKind

WasteStream = Literal["residual", "packaging", "glass", "paper", "organic", "textile", "other"]
# The same streams as a tuple, for code that iterates or checks membership at run time.
WASTE_STREAMS: tuple[WasteStream, ...] = get_args(WasteStream)
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
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
    q4_m3h: float | None = Field(
        default=None,
        gt=0,
        le=10_000,
        description="Maximum flow Q4 in m³/h; an index rising faster is flagged as a spike "
        "(default: the platform's water_q4_m3h, 3.125 for DN15).",
        examples=[3.125],
    )
    register_m3: float | None = Field(
        default=None,
        gt=0,
        description="The index at which the register wraps to 0 (100000 for a register showing "
        "up to 99,999.999 m³); unset: a wrap is flagged as an index decrease.",
        examples=[100000],
    )


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
        description="Fill level (%) at which the column is due for emptying (default 80).",
        examples=[80],
    )
    full_mm: int | None = Field(
        default=None,
        ge=0,
        le=10_000,
        description="Distance from the sensor at which the column counts as full (default 0: "
        "the sensor itself); set it where the inlet or the blind zone stops the content earlier.",
        examples=[250],
    )
    blind_zone_mm: int | None = Field(
        default=None,
        ge=0,
        le=2_000,
        description="Distances under this are the sensor's blind zone and are ignored "
        "(default 200).",
        examples=[250],
    )
    collection_days: list[Weekday] | None = Field(
        default=None,
        min_length=1,
        max_length=7,
        description="Days the column's round is collected (default: every working day, "
        "TERRITORY_WASTE_COLLECTION_DAYS).",
        examples=[["mon", "thu"]],
    )

    @model_validator(mode="after")
    def _full_above_bottom(self) -> WasteColumnAttributes:
        if self.depth_mm is not None and self.full_mm is not None and self.full_mm >= self.depth_mm:
            raise ValueError("full_mm must be less than depth_mm")
        return self


class ParkingSensorAttributes(_Attributes):
    zone: Label | None = Field(default=None, examples=["Parking de la Providence"])
    freshness_s: int | None = Field(
        default=None,
        ge=60,
        le=7 * 86400,
        description="How long a reading of this space stays valid; silent longer, the space "
        "counts as unknown. Default: the TERRITORY_PARKING_FRESHNESS_S setting (6.5 h).",
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

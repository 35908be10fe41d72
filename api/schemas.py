"""HTTP request and response models (distinct from inbound payloads and stored rows)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from devices.kinds import DeviceKind

DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
DeviceId = Annotated[
    str,
    Field(
        pattern=DEVICE_ID_PATTERN,
        description="Letters, digits, '.', '_' and '-', up to 64 characters; it is the "
        "second level of the device's MQTT topic.",
        examples=["wm-quimper-0042"],
    ),
]


class Location(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lat: float = Field(ge=-90, le=90, examples=[47.9960])
    lon: float = Field(ge=-180, le=180, examples=[-4.1024])


class DeviceCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "wc-ergue-0007",
                    "kind": "waste_column",
                    "label": "Colonne verre, place de la Mairie",
                    "location": {"lat": 47.9823, "lon": -4.0619},
                    "group": "round-ergue-tuesday",
                    "attributes": {"depth_mm": 1800, "capacity_l": 4000, "waste_stream": "glass"},
                }
            ]
        },
    )
    id: DeviceId
    kind: DeviceKind
    label: str = Field(default="", max_length=200)
    location: Location | None = None
    group: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Water district, collection round or parking zone.",
    )
    attributes: dict[str, Any] = Field(
        default_factory=dict,
        description="Kind-specific: water_meter {district}; waste_column {depth_mm, capacity_l, "
        "waste_stream}; parking_sensor {zone}.",
    )
    dev_eui: str | None = Field(
        default=None,
        description="LoRaWAN DevEUI (16 hex digits; separators and case are ignored). The "
        "device's uplinks arrive through a network server's MQTT integration.",
        examples=["24e124126b316403"],
    )
    wmbus_id: str | None = Field(
        default=None,
        description="The meter id wmbusmeters reports (`id` in its JSON).",
        examples=["12345678"],
    )
    decoder: str | None = Field(
        default=None,
        description="Payload decoder, one of GET /decoders; its kind must match. Without one, "
        "a LoRaWAN device's network-server-decoded object is mapped instead.",
        examples=["milesight-em310-udl"],
    )


class DeviceUpdate(BaseModel):
    """JSON merge-patch semantics: absent fields are kept; in `attributes`, a null removes."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"label": "Compteur rue de Kerfeunteun", "group": "nord"}]},
    )
    label: str | None = Field(default=None, max_length=200)
    location: Location | None = None
    group: str | None = Field(default=None, min_length=1, max_length=64)
    attributes: dict[str, Any] | None = None
    status: Literal["active", "decommissioned"] | None = None
    dev_eui: str | None = Field(default=None, description="null unbinds")
    wmbus_id: str | None = Field(default=None, description="null unbinds")
    decoder: str | None = Field(default=None, description="null unbinds")


class Device(BaseModel):
    id: str
    kind: DeviceKind
    label: str
    location: Location | None
    group: str | None
    attributes: dict[str, Any]
    status: Literal["active", "decommissioned"]
    created_at: datetime
    updated_at: datetime
    decommissioned_at: datetime | None
    dev_eui: str | None
    wmbus_id: str | None
    decoder: str | None


class DevicePage(BaseModel):
    items: list[Device]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


class WaterMeterValues(BaseModel):
    index_m3: float = Field(description="Cumulative volume, m³")
    flow_m3h: float | None
    battery_pct: float | None
    alarms: list[str]
    temperature_c: float | None
    battery_v: float | None


class WasteColumnValues(BaseModel):
    fill_pct: float
    distance_mm: float | None
    temperature_c: float | None
    battery_pct: float | None
    alarms: list[str]
    battery_v: float | None


class ParkingSensorValues(BaseModel):
    occupied: bool
    battery_pct: float | None
    temperature_c: float | None
    battery_v: float | None


class Radio(BaseModel):
    """How the uplink reached the network, for link-quality views (LoRaWAN devices)."""

    rssi_dbm: float | None
    snr_db: float | None
    frame_counter: int | None
    gateway_id: str | None


class ReadingOut(BaseModel):
    ts: datetime = Field(description="When the device measured it")
    received_at: datetime = Field(description="When the platform received it")
    values: WaterMeterValues | WasteColumnValues | ParkingSensorValues
    radio: Radio | None = Field(default=None, description="null for native MQTT devices")


class Latest(BaseModel):
    device_id: str
    kind: DeviceKind
    reading: ReadingOut | None = Field(description="null until the device's first reading")


class ReadingPage(BaseModel):
    device_id: str
    kind: DeviceKind
    items: list[ReadingOut]
    next_cursor: str | None


class FieldStatsOut(BaseModel):
    min: float | None
    max: float | None
    avg: float | None
    last: float | None


class BucketOut(BaseModel):
    start: datetime
    count: int
    fields: dict[str, FieldStatsOut] = Field(
        description="Per numeric field; for parking, `occupied` is 0/1 so avg is the occupancy"
    )


class Aggregate(BaseModel):
    device_id: str
    kind: DeviceKind
    bucket: str
    start: datetime
    end: datetime
    buckets: list[BucketOut]


class RejectedOut(BaseModel):
    id: int
    received_at: datetime
    topic: str
    device_id: str | None
    reason: str
    detail: str
    payload_text: str | None = Field(description="The raw payload as UTF-8, when it is text")
    payload_base64: str


class RejectedPage(BaseModel):
    items: list[RejectedOut]
    next_cursor: str | None


class RejectedCounts(BaseModel):
    since: datetime | None
    total: int
    by_reason: dict[str, int]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    storage: Literal["timescaledb", "postgresql", "unavailable"]
    postgresql_version: str | None
    timescaledb_version: str | None


class ErrorBody(BaseModel):
    detail: str | list[dict[str, Any]]


class DecoderOut(BaseModel):
    name: str
    vendor: str
    model: str
    kind: DeviceKind
    description: str


class BulkRowError(BaseModel):
    row: int = Field(description="1-based data row (CSV: the header is row 0) or array index + 1")
    id: str | None
    field: str | None = Field(description="The column or field at fault, when there is one")
    message: str


class BulkReport(BaseModel):
    dry_run: bool
    rows: int
    created: int
    created_ids: list[str]
    errors: list[BulkRowError]

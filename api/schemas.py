"""HTTP request and response models (distinct from inbound payloads and stored rows)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from devices.kinds import DeviceKind, all_specs


def _with_offset(value: datetime) -> datetime:
    # asyncpg returns a timestamptz as an aware datetime, except ±infinity, which it maps to
    # naive datetime.min/max: those are shown as the first/last UTC instant Python has.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# Every time the API returns carries an offset.
Timestamp = Annotated[datetime, AfterValidator(_with_offset)]

# Times accepted in queries: wide enough for any telemetry (a device whose clock was never set
# reports 1970 or 2000), narrow enough that converting to UTC or stepping a bucket or a day
# away can never leave the range Python and PostgreSQL share.
QUERY_TIME_MIN = datetime(1900, 1, 1, tzinfo=UTC)
QUERY_TIME_MAX = datetime(3000, 1, 1, tzinfo=UTC)


def _in_query_range(value: datetime) -> datetime:
    try:
        inside = QUERY_TIME_MIN <= value <= QUERY_TIME_MAX
    except OverflowError:  # an offset that takes the time outside Python's years 1..9999
        inside = False
    if not inside:
        raise ValueError(
            f"times must lie between {QUERY_TIME_MIN:%Y-%m-%dT%H:%M:%SZ} and "
            f"{QUERY_TIME_MAX:%Y-%m-%dT%H:%M:%SZ}"
        )
    return value


QueryTime = Annotated[AwareDatetime, AfterValidator(_in_query_range)]

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


TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
TenantId = Annotated[
    str,
    Field(
        pattern=TENANT_PATTERN,
        description="Lowercase letters, digits, '_' and '-', up to 64 characters",
        examples=["pays-fouesnantais"],
    ),
]


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
        description="Kind-specific; GET /kinds lists each kind's attributes.",
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
    tenant: TenantId | None = Field(
        default=None,
        description="The tenant the device belongs to. An admin key names it (default "
        "`default`); any other key registers into its own tenant, and naming another is "
        "refused (422).",
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
    created_at: Timestamp
    updated_at: Timestamp
    decommissioned_at: Timestamp | None
    dev_eui: str | None
    wmbus_id: str | None
    decoder: str | None
    tenant: str


class DevicePage(BaseModel):
    items: list[Device]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


def _values_schema(schema: dict[str, Any]) -> None:
    # Worked out when the OpenAPI document is generated: one schema per declared kind
    # (devices/kinds/), the kinds a deployment adds included.
    schema.clear()
    schema["description"] = "The reading's fields; which ones depends on the device's kind"
    schema["oneOf"] = [
        {**s.values_model.model_json_schema(), "title": f"{s.kind} values"} for s in all_specs()
    ]


class Radio(BaseModel):
    """How the uplink reached the network, for link-quality views (LoRaWAN devices)."""

    rssi_dbm: float | None
    snr_db: float | None
    frame_counter: int | None
    gateway_id: str | None


class ReadingOut(BaseModel):
    ts: Timestamp = Field(description="When the device measured it")
    received_at: Timestamp = Field(description="When the platform received it")
    values: dict[str, Any] = Field(json_schema_extra=_values_schema)
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
    start: Timestamp
    count: int
    fields: dict[str, FieldStatsOut] = Field(
        description="Per numeric field; for parking, `occupied` is 0/1 so avg is the occupancy"
    )


class Aggregate(BaseModel):
    device_id: str
    kind: DeviceKind
    bucket: str
    start: Timestamp
    end: Timestamp
    buckets: list[BucketOut]


PREVIEW_BYTES = 256


class RejectedOut(BaseModel):
    """A rejected message with a preview of its payload; the bytes themselves come from
    `GET /rejected/{id}/payload`."""

    id: int
    received_at: Timestamp
    topic: str
    device_id: str | None
    reason: str
    detail: str
    payload_size: int = Field(description="Size in bytes of the payload as it was received")
    payload_sha256: str = Field(description="SHA-256 (hex) of the payload as it was received")
    payload_truncated: bool = Field(
        description="True when only the first TERRITORY_REJECTED_PAYLOAD_MAX_BYTES bytes of "
        "the payload were stored"
    )
    payload_preview: str = Field(
        description=f"The first {PREVIEW_BYTES} bytes of the payload decoded as UTF-8, each "
        "byte that is not valid UTF-8 replaced by U+FFFD (a multi-byte character cut at the "
        "end is replaced too)"
    )
    payload_preview_base64: str = Field(
        description=f"The same first {PREVIEW_BYTES} bytes, exactly, in base64"
    )
    payload_preview_truncated: bool = Field(
        description=f"True when the payload is longer than the {PREVIEW_BYTES}-byte preview"
    )


class RejectedPage(BaseModel):
    items: list[RejectedOut]
    next_cursor: str | None


class RejectedCounts(BaseModel):
    since: Timestamp | None
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


class KindFieldOut(BaseModel):
    name: str
    type: Literal["float", "int", "bool", "text", "alarms"]
    required: bool = Field(description="Every reading has it")
    unit: str | None
    min: float | None = Field(description="Lowest plausible value; below it is refused")
    max: float | None = Field(description="Highest plausible value; above it is refused")
    description: str


class KindOut(BaseModel):
    kind: DeviceKind
    description: str
    fields: list[KindFieldOut]
    alarms: list[str]
    attributes_schema: dict[str, Any] = Field(
        description="JSON schema of the kind's registration attributes"
    )


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

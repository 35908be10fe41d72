from __future__ import annotations

import csv
import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from pydantic import ValidationError

from api.authz import Permission, require
from api.cursors import decode_cursor, encode_cursor
from api.deps import OwnedDevice, PoolDep, TenantDep, device_not_found
from api.limits import JSONLimitError, LimitedJSONRoute, parse_json
from api.registration import (
    FieldError,
    attributes_or_error,
    check_decoder,
    csv_rows,
    new_device,
    normalise_dev_eui,
    normalise_wmbus_id,
)
from api.schemas import (
    DEVICE_ID_PATTERN,
    BulkReport,
    BulkRowError,
    Device,
    DeviceCreate,
    DevicePage,
    DeviceUpdate,
    ErrorBody,
    Location,
    QueryTime,
)
from devices.kinds import DeviceKind
from storage import auth as tenants_store
from storage import registry
from storage.errors import DuplicateDevice
from storage.registry import NewDevice

router = APIRouter(prefix="/devices", tags=["devices"], route_class=LimitedJSONRoute)

DevicePath = Annotated[str, Path(description="Device id", examples=["wm-quimper-0042"])]
Start = Annotated[
    QueryTime | None,
    Query(description="Inclusive lower bound (RFC 3339 with offset, years 1900 to 3000)"),
]
End = Annotated[QueryTime | None, Query(description="Exclusive upper bound")]

MAX_BULK_ROWS = 10_000
MAX_BULK_BYTES = 8 * 1024 * 1024


class _RollBack(Exception):
    """Leaves a dry-run import's transaction without committing it."""


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No device with this id"}}


def _device_out(d: registry.DeviceRecord) -> Device:
    loc = Location(lat=d.lat, lon=d.lon) if d.lat is not None and d.lon is not None else None
    return Device(
        id=d.id,
        kind=d.kind,
        label=d.label,
        location=loc,
        group=d.group,
        attributes=d.attributes,
        status=d.status,
        created_at=d.created_at,
        updated_at=d.updated_at,
        decommissioned_at=d.decommissioned_at,
        dev_eui=d.dev_eui,
        wmbus_id=d.wmbus_id,
        decoder=d.decoder,
        tenant=d.tenant,
    )


READ = [require(Permission.READ)]
WRITE = [require(Permission.DEVICE_WRITE)]


def _unknown_tenant(tenant: str) -> FieldError:
    return FieldError("tenant", f"unknown tenant {tenant!r}; see GET /tenants")


async def _check_tenant(pool: PoolDep, new: NewDevice, caller: str | None) -> None:
    # A tenant's own key always names an existing tenant; only an admin can name a wrong one.
    if caller is None and await tenants_store.get_tenant(pool, new.tenant) is None:
        raise _unknown_tenant(new.tenant)


def _field_error(exc: FieldError) -> HTTPException:
    loc = ["body", *exc.field.split(".")] if exc.field else ["body"]
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"loc": loc, "msg": exc.message, "type": "value_error"}],
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=Device,
    summary="Register a device",
    responses={
        409: {"model": ErrorBody, "description": "The id, DevEUI or meter id is already taken"}
    },
    dependencies=WRITE,
)
async def create_device(body: DeviceCreate, pool: PoolDep, tenant: TenantDep) -> Device:
    try:
        new = new_device(body, tenant)
        await _check_tenant(pool, new, tenant)
    except FieldError as exc:
        raise _field_error(exc) from exc
    try:
        rec = await registry.create_device(pool, new, discreet=tenant is not None)
    except DuplicateDevice as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return _device_out(rec)


@router.post(
    "/bulk",
    response_model=BulkReport,
    responses={
        413: {"model": ErrorBody, "description": "The file is larger than an import may be"},
        415: {"model": ErrorBody, "description": "Neither application/json nor text/csv"},
    },
    summary="Register many devices from a JSON array or a CSV file",
    description="Send `application/json` (an array of POST /devices bodies) or `text/csv` "
    "(header row: id, kind, label, lat, lon, group, dev_eui, wmbus_id, decoder and attribute "
    "columns). Valid rows are created in one transaction; every refused row is reported with "
    "its row number, field and reason. Rows whose id, DevEUI or wM-Bus id is already "
    "registered (or repeated in the file) are refused, so a re-run creates nothing twice; "
    "to a tenant's key such a row reads `... is not available` whichever tenant holds it. "
    "`dry_run=true` validates without creating.",
    dependencies=WRITE,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "id,kind,group,dev_eui,decoder,depth_mm\n"
                    "wc-0001,waste_column,round-a,24e124126b316403,milesight-em310-udl,1800\n",
                },
            },
            "required": True,
        }
    },
)
async def bulk_register(
    request: Request, pool: PoolDep, tenant: TenantDep, dry_run: bool = False
) -> BulkReport:
    raw = await request.body()
    if len(raw) > MAX_BULK_BYTES:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE, f"at most {MAX_BULK_BYTES} bytes per import"
        )
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "the file is not UTF-8 text"
        ) from exc
    if ctype in ("text/csv", "application/csv"):
        try:
            items: Any = csv_rows(text)
        except FieldError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, exc.message) from exc
        except csv.Error as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"bad CSV: {exc}") from exc
    elif ctype == "application/json":
        try:
            items = parse_json(text)
        except json.JSONDecodeError as exc:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, f"malformed JSON: {exc}"
            ) from exc
        except JSONLimitError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
        if not isinstance(items, list):
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, "the JSON body must be an array of devices"
            )
    else:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "send Content-Type application/json (an array) or text/csv",
        )
    if len(items) > MAX_BULK_ROWS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"at most {MAX_BULK_ROWS} devices per import"
        )
    errors: list[BulkRowError] = []
    valid: list[tuple[int, NewDevice]] = []
    seen: dict[tuple[str, str], int] = {}
    known_tenants: dict[str, bool] = {}
    for n, item in enumerate(items, start=1):
        dev_id = item.get("id") if isinstance(item, dict) else None
        dev_id = dev_id if isinstance(dev_id, str) else None
        try:
            body = DeviceCreate.model_validate(item)
            new = new_device(body, tenant)
            if tenant is None:
                if new.tenant not in known_tenants:
                    known_tenants[new.tenant] = (
                        await tenants_store.get_tenant(pool, new.tenant) is not None
                    )
                if not known_tenants[new.tenant]:
                    raise _unknown_tenant(new.tenant)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            field = ".".join(str(p) for p in err["loc"]) or None
            errors.append(BulkRowError(row=n, id=dev_id, field=field, message=err["msg"]))
            continue
        except FieldError as exc:
            errors.append(BulkRowError(row=n, id=dev_id, field=exc.field, message=exc.message))
            continue
        keys = [
            (name, value)
            for name, value in (
                ("id", new.id),
                ("dev_eui", new.dev_eui),
                ("wmbus_id", new.wmbus_id),
            )
            if value is not None
        ]
        clash = next((k for k in keys if k in seen), None)
        if clash:
            message = f"{clash[0]} {clash[1]} repeats row {seen[clash]}"
            errors.append(BulkRowError(row=n, id=new.id, field=clash[0], message=message))
            continue
        seen.update((k, n) for k in keys)
        valid.append((n, new))
    created: list[str] = []
    results: list[tuple[int, registry.DeviceRecord | DuplicateDevice]] = []
    async with pool.acquire() as conn:
        try:
            async with conn.transaction():
                results = await registry.create_devices(
                    conn, [d for _, d in valid], discreet=tenant is not None
                )
                if dry_run:
                    raise _RollBack
        except _RollBack:
            pass
    for idx, res in results:
        n, dev = valid[idx]
        if isinstance(res, DuplicateDevice):
            field = next((f for f in ("dev_eui", "wmbus_id") if str(res).startswith(f)), "id")
            errors.append(BulkRowError(row=n, id=dev.id, field=field, message=str(res)))
        else:
            created.append(res.id)
    errors.sort(key=lambda e: e.row)
    return BulkReport(
        dry_run=dry_run, rows=len(items), created=len(created), created_ids=created, errors=errors
    )


@router.get("", response_model=DevicePage, summary="List devices", dependencies=READ)
async def list_devices(
    pool: PoolDep,
    tenant: TenantDep,
    kind: DeviceKind | None = None,
    group: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    status_: Annotated[
        str | None, Query(alias="status", pattern="^(active|decommissioned)$")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
) -> DevicePage:
    after = decode_cursor(cursor) if cursor else None
    if after is not None and not re.match(DEVICE_ID_PATTERN, after):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid cursor")
    recs = await registry.list_devices(
        pool,
        kind=kind,
        group=group,
        status=status_,
        after_id=after,
        limit=limit + 1,
        tenant=tenant,
    )
    more = len(recs) > limit
    recs = recs[:limit]
    return DevicePage(
        items=[_device_out(r) for r in recs],
        next_cursor=encode_cursor(recs[-1].id) if more else None,
    )


@router.get(
    "/{device_id}",
    response_model=Device,
    responses=NOT_FOUND,
    summary="Get a device",
    dependencies=READ,
)
async def get_device(device_id: DevicePath, dev: OwnedDevice) -> Device:
    return _device_out(dev)


@router.patch(
    "/{device_id}",
    response_model=Device,
    responses=NOT_FOUND,
    summary="Update a device",
    dependencies=WRITE,
)
async def update_device(
    device_id: DevicePath, body: DeviceUpdate, pool: PoolDep, dev: OwnedDevice, tenant: TenantDep
) -> Device:
    fields = body.model_fields_set
    attributes = dict(dev.attributes)
    if body.attributes is not None:
        for k, v in body.attributes.items():
            if v is None:
                attributes.pop(k, None)
            else:
                attributes[k] = v
    lat, lon = dev.lat, dev.lon
    if "location" in fields:
        lat, lon = (body.location.lat, body.location.lon) if body.location else (None, None)
    try:
        attributes = attributes_or_error(dev.kind, attributes)
        dev_eui = normalise_dev_eui(body.dev_eui) if "dev_eui" in fields else dev.dev_eui
        wmbus_id = normalise_wmbus_id(body.wmbus_id) if "wmbus_id" in fields else dev.wmbus_id
        decoder = body.decoder if "decoder" in fields else dev.decoder
        check_decoder(dev.kind, decoder)
    except FieldError as exc:
        raise _field_error(exc) from exc
    try:
        rec = await registry.update_device(
            pool,
            device_id,
            label=body.label if body.label is not None else dev.label,
            lat=lat,
            lon=lon,
            group=body.group if "group" in fields else dev.group,
            attributes=attributes,
            status=body.status or dev.status,
            dev_eui=dev_eui,
            wmbus_id=wmbus_id,
            decoder=decoder,
            tenant=tenant,
        )
    except DuplicateDevice as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    if rec is None:  # removed concurrently; devices are never deleted, so unlikely
        raise device_not_found(device_id)
    return _device_out(rec)


@router.delete(
    "/{device_id}",
    response_model=Device,
    responses=NOT_FOUND,
    summary="Decommission a device",
    description="The device and its readings are kept; new messages from it are rejected "
    "with reason `inactive_device`. PATCH `status: active` brings it back.",
    dependencies=WRITE,
)
async def decommission_device(
    device_id: DevicePath, pool: PoolDep, dev: OwnedDevice, tenant: TenantDep
) -> Device:
    rec = await registry.decommission_device(pool, device_id, tenant=tenant)
    if rec is None:
        raise device_not_found(device_id)
    return _device_out(rec)

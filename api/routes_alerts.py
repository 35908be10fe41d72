"""Alerts: what needs a person, and whether it reached them (docs/alerts.md)."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from analytics.alerts import ALERT_TYPES, STATUSES
from api.authz import Permission, require
from api.deps import CurrentKey, PoolDep, TenantDep
from api.schemas import DEVICE_ID_PATTERN, ErrorBody
from storage import alerts as store

router = APIRouter(prefix="/alerts", tags=["alerts"])

AlertStatus = Literal["open", "acknowledged", "cleared", "active"]
DeliveryStatus = Literal["pending", "delivered", "failed"]


class AlertOut(BaseModel):
    id: int
    device_id: str
    type: str
    severity: str
    status: str
    opened_at: datetime
    last_seen_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    cleared_at: datetime | None
    count: int = Field(description="Times the condition was seen while the alert was open")
    detail: dict[str, Any]


class AlertPage(BaseModel):
    items: list[AlertOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


class AlertCounts(BaseModel):
    since: datetime | None
    total: int
    by_type: dict[str, dict[str, int]] = Field(description="{type: {status: count}}")
    mqtt_pending: int | None = Field(
        description="State changes not yet acknowledged by the broker (the platform's, across "
        "tenants: null for a tenant's key)"
    )


class Acknowledge(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: str = Field(min_length=1, max_length=64, description="Who takes the alert in hand")


class DeliveryOut(BaseModel):
    id: int
    webhook: str
    type: str
    transition: str
    alert_events: int
    created_at: datetime
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    delivered_at: datetime | None


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


def _out(a: store.AlertRecord) -> AlertOut:
    return AlertOut(**{f: getattr(a, f) for f in AlertOut.model_fields})


def _encode(n: int) -> str:
    return base64.urlsafe_b64encode(f"id:{n}".encode()).decode().rstrip("=")


def _decode(cursor: str) -> int:
    try:
        text = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        prefix, _, raw = text.decode().partition(":")
        value = int(raw)
        if prefix != "id" or value < 1:
            raise ValueError(cursor)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{"loc": ["query", "cursor"], "msg": "invalid cursor", "type": "value_error"}],
        ) from exc
    return value


def _acknowledger(body: Acknowledge, key: CurrentKey) -> str:
    """Who acknowledges: the body's `by`, and for a stored key the key's id beside it, so that
    an acknowledgement can be traced to the key that made it."""
    return body.by if key.name == "admin" else f"{body.by} [{key.name}]"


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}


@router.get(
    "",
    response_model=AlertPage,
    summary="Alerts, newest first",
    responses=NOT_FOUND,
    description="`status=active` lists open and acknowledged alerts. `group` is the device's "
    "group (water district, collection round, parking zone); `since` bounds `opened_at`.",
    dependencies=[require(Permission.READ)],
)
async def list_alerts(
    pool: PoolDep,
    tenant: TenantDep,
    status_: Annotated[AlertStatus | None, Query(alias="status")] = None,
    type_: Annotated[str | None, Query(alias="type", examples=["offline"])] = None,
    device_id: Annotated[str | None, Query(pattern=DEVICE_ID_PATTERN)] = None,
    group: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    since: Annotated[AwareDatetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
) -> AlertPage:
    if type_ is not None and type_ not in ALERT_TYPES:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [
                {
                    "loc": ["query", "type"],
                    "msg": f"unknown alert type {type_!r}; one of {', '.join(ALERT_TYPES)}",
                    "type": "value_error",
                }
            ],
        )
    before = _decode(cursor) if cursor else None
    if device_id is not None and not await store.device_exists(pool, device_id, tenant):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"device {device_id!r} not found")
    if group is not None and not await store.group_exists(pool, group, tenant):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device in group {group!r}")
    rows = await store.list_alerts(
        pool,
        status=status_,
        type_=type_,
        device_id=device_id,
        group=group,
        since=since,
        before_id=before,
        limit=limit + 1,
        tenant=tenant,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return AlertPage(
        items=[_out(r) for r in rows], next_cursor=_encode(rows[-1].id) if more else None
    )


@router.get(
    "/counts",
    response_model=AlertCounts,
    summary="Alerts by type and status",
    dependencies=[require(Permission.READ)],
)
async def count_alerts(
    pool: PoolDep, tenant: TenantDep, since: Annotated[AwareDatetime | None, Query()] = None
) -> AlertCounts:
    counts = await store.count_alerts(pool, since=since, tenant=tenant)
    for by_status in counts.values():
        for s in STATUSES:
            by_status.setdefault(s, 0)
    return AlertCounts(
        since=since,
        total=sum(sum(v.values()) for v in counts.values()),
        by_type=counts,
        mqtt_pending=await store.mqtt_pending_count(pool) if tenant is None else None,
    )


@router.get(
    "/deliveries",
    response_model=DeliveryPage,
    summary="Grouped webhook notifications and their delivery, newest first",
    description="`pending` ones are being retried (see `attempts`, `last_error`, "
    "`next_attempt_at`); `failed` ones used up their attempts. Webhooks are the platform's, "
    "across tenants: admin only.",
    dependencies=[require(Permission.ADMIN)],
)
async def list_deliveries(
    pool: PoolDep,
    status_: Annotated[DeliveryStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
) -> DeliveryPage:
    before = _decode(cursor) if cursor else None
    rows = await store.list_notifications(pool, status=status_, before_id=before, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return DeliveryPage(
        items=[
            DeliveryOut(
                id=n.id,
                webhook=n.webhook,
                type=n.type,
                transition=n.transition,
                alert_events=len(n.event_ids),
                created_at=n.created_at,
                status=n.status,
                attempts=n.attempts,
                next_attempt_at=n.next_attempt_at if n.status == "pending" else None,
                last_error=n.last_error,
                delivered_at=n.delivered_at,
            )
            for n in rows
        ],
        next_cursor=_encode(rows[-1].id) if more else None,
    )


@router.post(
    "/deliveries/{delivery_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a failed notification again",
    responses={404: {"model": ErrorBody}},
    dependencies=[require(Permission.ADMIN)],
)
async def retry_delivery(pool: PoolDep, delivery_id: Annotated[int, Path(ge=1)]) -> dict[str, Any]:
    if not await store.retry_notification(pool, delivery_id):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"no failed notification with id {delivery_id}"
        )
    return {"id": delivery_id, "status": "pending"}


@router.get(
    "/{alert_id}",
    response_model=AlertOut,
    responses=NOT_FOUND,
    summary="One alert",
    dependencies=[require(Permission.READ)],
)
async def get_alert(
    pool: PoolDep, tenant: TenantDep, alert_id: Annotated[int, Path(ge=1)]
) -> AlertOut:
    a = await store.get_alert(pool, alert_id, tenant)
    if a is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"alert {alert_id} not found")
    return _out(a)


@router.post(
    "/{alert_id}/acknowledge",
    response_model=AlertOut,
    summary="Take an alert in hand",
    description="An open alert becomes acknowledged (who and when are kept); it still clears "
    "by itself when its condition ends. Acknowledging an acknowledged alert changes nothing.",
    responses={**NOT_FOUND, 409: {"model": ErrorBody, "description": "Already cleared"}},
    dependencies=[require(Permission.ALERT_ACK)],
)
async def acknowledge(
    pool: PoolDep,
    tenant: TenantDep,
    alert_id: Annotated[int, Path(ge=1)],
    by: Annotated[str, Depends(_acknowledger)],
) -> AlertOut:
    async with pool.acquire() as conn:
        outcome, alert = await store.acknowledge(conn, alert_id, by, tenant)
    if alert is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"alert {alert_id} not found")
    if outcome == "cleared":
        when = alert.cleared_at.isoformat() if alert.cleared_at else "?"
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"alert {alert_id} was cleared at {when}; there is nothing left to acknowledge",
        )
    return _out(alert)

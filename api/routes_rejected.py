from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from fastapi.responses import Response

from api.authz import Permission, require
from api.deps import PoolDep, TenantDep, heavy_slot
from api.limits import LimitedJSONRoute
from api.schemas import (
    DEVICE_ID_PATTERN,
    PREVIEW_BYTES,
    ErrorBody,
    QueryTime,
    RejectedCounts,
    RejectedOut,
    RejectedPage,
)
from storage import readings as rq

router = APIRouter(
    prefix="/rejected",
    tags=["rejected messages"],
    route_class=LimitedJSONRoute,
    dependencies=[require(Permission.READ)],
)

REASON_PATTERN = r"^[a-z_]{1,64}$"
MAX_ID = 2**63 - 1  # bigint


def _out(r: rq.RejectedMessage) -> RejectedOut:
    return RejectedOut(
        id=r.id,
        received_at=r.received_at,
        topic=r.topic,
        device_id=r.device_id,
        reason=r.reason,
        detail=r.detail,
        payload_size=r.payload_size,
        payload_sha256=r.payload_sha256.hex(),
        payload_truncated=r.payload_truncated,
        payload_preview=r.preview.decode("utf-8", errors="replace"),
        payload_preview_base64=base64.b64encode(r.preview).decode(),
        payload_preview_truncated=r.payload_size > len(r.preview),
    )


@router.get(
    "",
    response_model=RejectedPage,
    summary="Messages that did not become readings, newest first",
    description=f"Each item carries the first {PREVIEW_BYTES} bytes of its payload (as text and "
    "as base64), the payload's size and SHA-256; `GET /rejected/{id}/payload` returns the "
    "stored bytes. A tenant's key sees the rejections of its tenant's devices only; those "
    "naming no registered device are for an admin.",
)
async def list_rejected(
    request: Request,
    pool: PoolDep,
    tenant: TenantDep,
    reason: Annotated[
        str | None, Query(pattern=REASON_PATTERN, examples=["unknown_device"])
    ] = None,
    device_id: Annotated[str | None, Query(pattern=DEVICE_ID_PATTERN)] = None,
    since: Annotated[QueryTime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="`next_cursor` of the previous page")
    ] = None,
) -> RejectedPage:
    async with heavy_slot(request):
        rows = await rq.list_rejected(
            pool,
            reason=reason,
            device_id=device_id,
            since=since,
            before_id=cursor,
            limit=limit + 1,
            preview_bytes=PREVIEW_BYTES,
            tenant=tenant,
        )
    more = len(rows) > limit
    rows = rows[:limit]
    return RejectedPage(
        items=[_out(r) for r in rows],
        next_cursor=str(rows[-1].id) if more else None,
    )


@router.get("/counts", response_model=RejectedCounts, summary="Rejected messages by reason")
async def count_rejected(
    pool: PoolDep,
    tenant: TenantDep,
    since: Annotated[QueryTime | None, Query()] = None,
    device_id: Annotated[str | None, Query(pattern=DEVICE_ID_PATTERN)] = None,
) -> RejectedCounts:
    counts = await rq.count_rejected(pool, since=since, device_id=device_id, tenant=tenant)
    return RejectedCounts(since=since, total=sum(counts.values()), by_reason=counts)


@router.get(
    "/{rejected_id}/payload",
    response_class=Response,
    summary="The stored bytes of a rejected message's payload",
    description="`application/octet-stream`, exactly as stored. Payloads larger than "
    "TERRITORY_REJECTED_PAYLOAD_MAX_BYTES were cut when stored: `X-Payload-Truncated: true`, "
    "and `X-Payload-Size` / `X-Payload-SHA256` describe the payload as received.",
    responses={
        200: {
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
            "description": "The payload bytes",
        },
        404: {"model": ErrorBody, "description": "No rejected message with this id"},
    },
)
async def rejected_payload(
    pool: PoolDep,
    tenant: TenantDep,
    rejected_id: Annotated[int, Path(ge=1, le=MAX_ID, description="`id` of the message")],
) -> Response:
    found = await rq.rejected_payload(pool, rejected_id, tenant=tenant)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no rejected message with id {rejected_id}")
    return Response(
        content=found.payload,
        media_type="application/octet-stream",
        headers={
            "X-Payload-Size": str(found.payload_size),
            "X-Payload-SHA256": found.payload_sha256.hex(),
            "X-Payload-Truncated": "true" if found.payload_truncated else "false",
        },
    )

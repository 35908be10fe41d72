from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from api.deps import PoolDep
from api.schemas import DEVICE_ID_PATTERN, RejectedCounts, RejectedOut, RejectedPage
from storage import readings as rq

router = APIRouter(prefix="/rejected", tags=["rejected messages"])

REASON_PATTERN = r"^[a-z_]{1,64}$"


def _text(payload: bytes) -> str | None:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return None


@router.get(
    "",
    response_model=RejectedPage,
    summary="Messages that did not become readings, newest first",
)
async def list_rejected(
    pool: PoolDep,
    reason: Annotated[
        str | None, Query(pattern=REASON_PATTERN, examples=["unknown_device"])
    ] = None,
    device_id: Annotated[str | None, Query(pattern=DEVICE_ID_PATTERN)] = None,
    since: Annotated[AwareDatetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        int | None, Query(ge=1, description="`next_cursor` of the previous page")
    ] = None,
) -> RejectedPage:
    rows = await rq.list_rejected(
        pool, reason=reason, device_id=device_id, since=since, before_id=cursor, limit=limit + 1
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return RejectedPage(
        items=[
            RejectedOut(
                id=r.id,
                received_at=r.received_at,
                topic=r.topic,
                device_id=r.device_id,
                reason=r.reason,
                detail=r.detail,
                payload_text=_text(r.payload),
                payload_base64=base64.b64encode(r.payload).decode(),
            )
            for r in rows
        ],
        next_cursor=str(rows[-1].id) if more else None,
    )


@router.get("/counts", response_model=RejectedCounts, summary="Rejected messages by reason")
async def count_rejected(
    pool: PoolDep,
    since: Annotated[AwareDatetime | None, Query()] = None,
    device_id: Annotated[str | None, Query(pattern=DEVICE_ID_PATTERN)] = None,
) -> RejectedCounts:
    counts = await rq.count_rejected(pool, since=since, device_id=device_id)
    return RejectedCounts(since=since, total=sum(counts.values()), by_reason=counts)

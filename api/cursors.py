"""Opaque page cursors of the device and reading routes (base64url of a key)."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from fastapi import HTTPException, status


def encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid cursor") from exc


# A reading stored at ±infinity comes back from asyncpg as naive datetime.min/max; its cursor
# names the infinity itself, so that the next page starts exactly after it.
_INFINITIES = {datetime.min: "-infinity", datetime.max: "infinity"}


def ts_cursor(ts: datetime) -> str:
    if ts.tzinfo is None:
        return encode_cursor(_INFINITIES[ts])
    return encode_cursor(ts.astimezone(UTC).isoformat())


def decode_ts_cursor(cursor: str) -> datetime:
    text = decode_cursor(cursor)
    for value, name in _INFINITIES.items():
        if text == name:
            return value  # asyncpg sends these naive sentinels as ±infinity
    try:
        ts = datetime.fromisoformat(text)
        if ts.tzinfo is None:
            raise ValueError("no offset")
        return ts.astimezone(UTC)  # OverflowError past year 1 or 9999
    except (ValueError, OverflowError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid cursor") from exc

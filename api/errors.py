"""JSON error responses written straight to ASGI, for middleware that answers before the app."""

from __future__ import annotations

import json

from starlette.types import Scope, Send


async def send_json(
    send: Send,
    status_code: int,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    close: bool = False,
) -> None:
    """Send `{"detail": ...}` as the whole response. `close`: ask the client to drop the
    connection, since the request body it may still be sending will not be read."""
    body = json.dumps({"detail": detail}).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    if close:
        raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status_code, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def has_body(scope: Scope) -> bool:
    """Whether the request announces a body (which an early answer leaves unread)."""
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False

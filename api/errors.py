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
    """Send `{"detail": ...}` as the whole response. `close`: end the connection after it,
    rather than let the server read the rest of the request body."""
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


def streams_unbounded_body(scope: Scope) -> bool:
    """Whether the request's body comes without a declared length (chunked). After an early
    answer, a body of declared length is read and discarded by the server without being kept
    (closing instead could reset the connection before the client reads the answer); an
    unbounded one is cut off by closing the connection."""
    return any(name == b"transfer-encoding" for name, _ in scope.get("headers", ()))

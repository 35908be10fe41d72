"""Limits on what a request may make the API read and parse.

The body size is enforced as the body streams in (Content-Length first, then a running count
for chunked bodies), so an oversized request is refused without being buffered. JSON bodies
are parsed here rather than by the framework: nesting depth and the length of numbers are
bounded, and non-standard constants (NaN, Infinity) are refused, each with a 422 and a sentence,
where Python's parser would otherwise raise RecursionError or ValueError (a 500).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response, status
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import send_json

# Device registrations are flat objects; 32 levels leaves room for any reasonable attribute.
MAX_JSON_DEPTH = 32
# Longer than any real coordinate, counter or id; far below Python's 4,300-digit int limit.
MAX_NUMBER_CHARS = 64


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a streamed body passes the limit. An HTTPException, so that
    the framework's body parsing passes it on unchanged and it is answered as a 413."""

    def __init__(self, limit: int) -> None:
        # Raised only once more than the limit has streamed in, when the length was not
        # declared (or was wrong): the rest is not waited for.
        super().__init__(
            status.HTTP_413_CONTENT_TOO_LARGE,
            too_large_message(limit),
            headers={"Connection": "close"},
        )


def too_large_message(limit: int) -> str:
    return f"the request body is larger than the {limit} bytes this API accepts"


class BodyLimitMiddleware:
    """Refuse bodies over `max_bytes` with 413 without reading them any further."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            # The server discards the declared bytes without keeping them; the client, which
            # may still be sending, then reads this answer instead of a reset connection.
            await send_json(send, 413, too_large_message(self.max_bytes))
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            # Only reached when the body was read outside a route's error handling.
            if started:
                raise
            await send_json(send, 413, too_large_message(self.max_bytes), close=True)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed Content-Length itself
    return None


# -- JSON --------------------------------------------------------------------------------------


class JSONLimitError(ValueError):
    """A JSON document that is well-formed but beyond what the API accepts."""


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise JSONLimitError(f"a number in the JSON body has more than {MAX_NUMBER_CHARS} digits")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise JSONLimitError(
            f"a number in the JSON body has more than {MAX_NUMBER_CHARS} characters"
        )
    value = float(text)
    if not math.isfinite(value):
        raise JSONLimitError("a number in the JSON body is out of range")
    return value


def _refuse_constant(name: str) -> Any:
    raise JSONLimitError(f"{name} is not valid JSON")


def _depth(value: Any) -> int:
    """Nesting depth of a parsed document, without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_JSON_DEPTH:
            break
        stack.extend((child, level + 1) for child in children)
    return deepest


def parse_json(raw: bytes | str) -> Any:
    """json.loads with the API's limits. Raises json.JSONDecodeError for malformed documents
    (the framework reports it with its position) and JSONLimitError for the limits."""
    try:
        value = json.loads(
            raw,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_refuse_constant,
        )
    except RecursionError as exc:
        raise JSONLimitError(f"the JSON body is nested more than {MAX_JSON_DEPTH} levels") from exc
    except UnicodeDecodeError as exc:
        raise JSONLimitError("the JSON body is not UTF-8 text") from exc
    if _depth(value) > MAX_JSON_DEPTH:
        raise JSONLimitError(f"the JSON body is nested more than {MAX_JSON_DEPTH} levels")
    return value


class LimitedJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = parse_json(await self.body())
            except JSONLimitError as exc:
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
        return self._json


class LimitedJSONRoute(APIRoute):
    """A route whose JSON body goes through `parse_json`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def limited(request: Request) -> Response:
            return await handler(LimitedJSONRequest(request.scope, request.receive))

        return limited

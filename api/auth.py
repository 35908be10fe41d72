"""Who is calling: the bearer key, checked before anything of the request is read.

`authenticate` is the one place a key becomes a `Principal`; the middleware (which refuses
unauthenticated requests before their body is read) and the route dependency both use it. A
key is either the bootstrap admin key from the settings or a stored key (`storage.auth`),
looked up on every request (no cache), so a revocation or an expiry takes effect at once in
every API process.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal

import asyncpg
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import send_json, streams_unbounded_body
from storage import auth as keys_store
from territory.config import Settings

MISSING_CREDENTIALS = "missing credentials: send 'Authorization: Bearer <key>'"
INVALID_KEY = "invalid key"
CHALLENGE = {"WWW-Authenticate": "Bearer"}
PRINCIPAL_KEY = "principal"  # in the request's scope["state"]


Role = Literal["admin", "integrator", "operator", "crew", "viewer"]


@dataclass(frozen=True, slots=True)
class Principal:
    name: str  # the key's id, or "admin" for the bootstrap key
    role: Role
    # None: every tenant (admin). Otherwise the one tenant whose devices the key may see.
    tenant: str | None = None
    label: str = ""


async def authenticate(
    settings: Settings, pool: asyncpg.Pool | None, token: str
) -> Principal | None:
    """The principal holding `token`, or None when no key matches."""
    if settings.admin_key and secrets.compare_digest(token.encode(), settings.admin_key.encode()):
        return Principal(name="admin", role="admin")
    if pool is None or keys_store.split_key(token) is None:
        return None
    rec = await keys_store.verify_key(pool, token)
    if rec is None:
        return None
    role: Role = rec.role  # type: ignore[assignment]  # the table's check constraint
    return Principal(
        name=rec.id, role=role, tenant=None if role == "admin" else rec.tenant, label=rec.label
    )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None when absent or another
    scheme."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


class AuthMiddleware:
    """Refuse requests to protected paths without a valid key, with 401, before the body is
    read. Every path is protected except those listed as public (exact) or under a public
    prefix: an unknown path asks for the key too, which says nothing about what exists."""

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        public_paths: frozenset[str],
        public_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.settings = settings
        self.public_paths = public_paths
        self.public_prefixes = public_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._public(scope["path"]):
            await self.app(scope, receive, send)
            return
        header = next(
            (v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"authorization"),
            None,
        )
        token = bearer_token(header)
        if token is None:
            await send_json(
                send,
                401,
                MISSING_CREDENTIALS,
                headers=CHALLENGE,
                close=streams_unbounded_body(scope),
            )
            return
        app = scope.get("app")
        pool = getattr(app.state, "pool", None) if app is not None else None
        principal = await authenticate(self.settings, pool, token)
        if principal is None:
            await send_json(
                send, 401, INVALID_KEY, headers=CHALLENGE, close=streams_unbounded_body(scope)
            )
            return
        scope.setdefault("state", {})[PRINCIPAL_KEY] = principal
        await self.app(scope, receive, send)

    def _public(self, path: str) -> bool:
        return path in self.public_paths or path.startswith(self.public_prefixes)

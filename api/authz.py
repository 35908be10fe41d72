"""Who may do what: one permission per route, and the roles that hold each permission.

Every protected route declares exactly one permission with `require(Permission.X)` in its
decorator's `dependencies`. `create_app` refuses to start when a route outside the public ones
declares none, and copies each declaration into the OpenAPI document (`x-permission`), from
which `api.authz_matrix` writes the role-by-route table of docs/auth-matrix.md.

What a role may do is decided here only; which devices it sees (its tenant) is decided by the
storage queries, which every route calls with the caller's tenant.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Depends, HTTPException, status
from fastapi.routing import APIRoute

from api.auth import Principal
from api.deps import current_principal


class Permission(StrEnum):
    READ = "read"  # devices, readings, rejections, water, parking, alerts of the tenant
    WASTE_READ = "waste_read"  # forecasts, the collection list
    WASTE_EMPTY = "waste_empty"  # record a column emptied
    DEVICE_WRITE = "device_write"  # register, modify, decommission, bind, declare index resets
    ALERT_ACK = "alert_ack"
    ADMIN = "admin"  # tenants, keys, webhook deliveries


ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "admin": frozenset(Permission),
    "integrator": frozenset({Permission.READ, Permission.WASTE_READ, Permission.DEVICE_WRITE}),
    "operator": frozenset({Permission.READ, Permission.WASTE_READ, Permission.ALERT_ACK}),
    "crew": frozenset({Permission.WASTE_READ, Permission.WASTE_EMPTY}),
    "viewer": frozenset({Permission.READ, Permission.WASTE_READ}),
}
ROLES = tuple(ROLE_PERMISSIONS)
OPENAPI_KEY = "x-permission"


def allowed(principal: Principal, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS.get(principal.role, frozenset())


def forbidden(principal: Principal, permission: Permission) -> HTTPException:
    # Says what is missing, never anything about the data the request names.
    return HTTPException(
        status.HTTP_403_FORBIDDEN,
        f"a {principal.role} key may not do this (it needs the {permission.value!r} permission)",
    )


def require(permission: Permission) -> Any:
    """The dependency a route declares: the caller must hold `permission`."""

    async def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not allowed(principal, permission):
            raise forbidden(principal, permission)
        return principal

    check.permission = permission  # type: ignore[attr-defined]  # read by route_permission
    return Depends(check)


def route_permission(route: APIRoute) -> Permission | None:
    """The permission a route declared (with `require`, or `x-permission` for the pages
    that check their key themselves), None when it declared none."""
    found: list[Permission] = [
        Permission(p)
        for d in route.dependencies
        if (p := getattr(d.dependency, "permission", None))
    ]
    declared = (route.openapi_extra or {}).get(OPENAPI_KEY)
    if declared is not None:
        found.append(Permission(declared))
    if len(set(found)) > 1:
        names = sorted(p.value for p in set(found))
        raise RuntimeError(f"{route.path} declares several permissions: {names}")
    return found[0] if found else None


def declare_permissions(routes: list[Any], public: Callable[[str], bool]) -> None:
    """Publish each route's permission in the OpenAPI; refuse a protected route without one."""
    missing = []
    for route in routes:
        if not isinstance(route, APIRoute):
            continue
        perm = route_permission(route)
        if perm is None:
            if not public(route.path):
                missing.append(f"{sorted(route.methods or ())} {route.path}")
            continue
        route.openapi_extra = {**(route.openapi_extra or {}), OPENAPI_KEY: perm.value}
    if missing:
        raise RuntimeError(
            "routes without a permission (add dependencies=[require(Permission.X)]): "
            + ", ".join(missing)
        )

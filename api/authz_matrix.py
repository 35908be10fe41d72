"""The role-by-route table of docs/auth-matrix.md, generated from the API's OpenAPI document.

`python -m api.authz_matrix > docs/auth-matrix.md`; `tests/test_authz.py` fails while the file
differs from what this prints, so a new route cannot be left out of the documentation, and
another test calls every route with every role's key and checks the API does what it says.
"""

from __future__ import annotations

import sys
from typing import Any

from api.authz import OPENAPI_KEY, ROLE_PERMISSIONS, ROLES, Permission

METHODS = ("get", "post", "put", "patch", "delete")


def operations(openapi: dict[str, Any]) -> list[tuple[str, str, Permission | None]]:
    """(METHOD, path, permission or None when public) of every operation, sorted."""
    out = []
    for path, item in openapi["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            perm = op.get(OPENAPI_KEY)
            out.append((method.upper(), path, Permission(perm) if perm else None))
    return sorted(out, key=lambda o: (o[1], METHODS.index(o[0].lower())))


def may(role: str, permission: Permission | None) -> bool:
    return permission is None or permission in ROLE_PERMISSIONS[role]


def render(openapi: dict[str, Any]) -> str:
    lines = [
        "# Who may call what (generated)",
        "",
        "Generated from the OpenAPI document by `python -m api.authz_matrix > "
        "docs/auth-matrix.md`; do not edit. `yes`: the role may call the route (within its "
        "tenant, except `admin`); `-`: 403. Public routes need no key. The model is in "
        "[auth.md](auth.md).",
        "",
        "| method | path | permission | " + " | ".join(ROLES) + " |",
        "|---|---|---|" + "---|" * len(ROLES),
    ]
    for method, path, perm in operations(openapi):
        cells = " | ".join("yes" if may(r, perm) else "-" for r in ROLES)
        name = perm.value if perm else "public"
        lines.append(f"| {method} | `{path}` | {name} | {cells} |")
    lines += [
        "",
        "| permission | roles |",
        "|---|---|",
        *(
            f"| {p.value} | {', '.join(r for r in ROLES if p in ROLE_PERMISSIONS[r])} |"
            for p in Permission
        ),
    ]
    return "\n".join(lines) + "\n"


def app_openapi() -> dict[str, Any]:
    from api.app import create_app
    from territory.config import load_settings

    # The document needs no database: these addresses are never connected to.
    settings = load_settings(
        database_url="postgresql://localhost/unused",
        mqtt_url="mqtt://localhost:1883",
        environment="development",
    )
    return create_app(settings).openapi()


def main() -> int:
    sys.stdout.write(render(app_openapi()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

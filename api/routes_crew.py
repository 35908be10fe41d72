"""The crew's page: today's collection list on a phone, one tap to record a column emptied.

Server-rendered HTML with no script and no build step, readable on a small screen and on paper.
A phone cannot send an `Authorization` header from a link, so the page takes the key once in a
form and keeps it in a cookie limited to /crew (HttpOnly, SameSite=Strict: another site cannot
make the browser post to it). The list is the API's own (`GET /waste/collection-list`), of the
key's tenant only, and the page answers within the same permissions (api/authz.py); a column
marked emptied here is recorded as a crew confirmation, which the fill model takes as ground
truth, and leaves the list at once.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from html import escape
from typing import Annotated
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.auth import Principal, authenticate, bearer_token
from api.authz import OPENAPI_KEY, Permission, allowed
from api.deps import PoolDep, SettingsDep
from api.routes_waste import CollectionList, ListItem, collection_list
from storage import waste as wq

router = APIRouter(prefix="/crew", tags=["crew"])

COOKIE = "territory_crew_key"
MAX_FORM_BYTES = 4096

_CSS = """
body{font-family:system-ui,sans-serif;margin:0;padding:0 12px 24px;max-width:760px;
  color:#1b1b1b;background:#fafafa}
h1{font-size:1.3rem;margin:14px 0 4px}
.sub{color:#555;margin:0 0 12px}
nav a{display:inline-block;margin:0 6px 6px 0;padding:6px 10px;border:1px solid #bbb;
  border-radius:16px;text-decoration:none;color:#1b1b1b;background:#fff}
nav a.on{background:#1b5e20;color:#fff;border-color:#1b5e20}
ol{list-style:none;padding:0;margin:0}
li{background:#fff;border:1px solid #ddd;border-left:8px solid #999;border-radius:8px;
  margin:10px 0;padding:10px 12px}
li.alarm{border-left-color:#b71c1c} li.full{border-left-color:#e65100}
li.due{border-left-color:#f9a825}
.top{display:flex;justify-content:space-between;align-items:baseline;gap:8px}
.id{font-weight:700;font-size:1.05rem} .fill{font-size:1.4rem;font-weight:700}
.why{text-transform:uppercase;font-size:.8rem;font-weight:700;letter-spacing:.04em}
.meta{color:#444;font-size:.9rem;margin:4px 0 8px}
.acts{display:flex;gap:8px;flex-wrap:wrap}
.acts a,.acts button{font-size:1rem;padding:10px 14px;border-radius:6px;border:1px solid #1b5e20;
  background:#fff;color:#1b5e20;text-decoration:none;cursor:pointer}
.acts button{background:#1b5e20;color:#fff}
.done{background:#e8f5e9;border:1px solid #a5d6a7;padding:8px 12px;border-radius:6px}
.empty{padding:24px 0;color:#555}
form.login input{font-size:1rem;padding:10px;width:100%;box-sizing:border-box;margin:8px 0}
@media print{nav,.acts,form{display:none} body{background:#fff}
  li{break-inside:avoid;border-left-width:4px}}
"""

_REASON = {"alarm": "alarm", "full": "full", "due": "due soon"}


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>",
        headers={"Cache-Control": "no-store"},
    )


async def _principal(request: Request, settings: SettingsDep, pool: PoolDep) -> Principal | None:
    token = bearer_token(request.headers.get("authorization")) or request.cookies.get(COOKIE)
    if not token:
        return None
    return await authenticate(settings, pool, token)


def _login(message: str = "") -> HTMLResponse:
    note = f"<p class='done'>{escape(message)}</p>" if message else ""
    return _page(
        "Collection list — sign in",
        "<h1>Collection list</h1>"
        f"{note}<form class='login' method='post' action='/crew/login'>"
        "<label for='key'>Your crew key</label>"
        "<input id='key' name='key' type='password' autocomplete='current-password' required>"
        "<button type='submit' class='acts'>Open the list</button></form>",
    )


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form (a key, a column id): read whole, within a few kilobytes."""
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "form too large")
    try:
        fields = parse_qs(raw.decode("utf-8"), max_num_fields=10, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "the form could not be read"
        ) from exc
    return {k: v[0] for k, v in fields.items() if v}


def _when(ts: datetime | None) -> str:
    return "—" if ts is None else ts.strftime("%a %d %b %H:%M")


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "no reading"
    if seconds < 3600:
        return f"read {seconds // 60} min ago"
    if seconds < 2 * 86400:
        return f"read {seconds // 3600} h ago"
    return f"read {seconds // 86400} days ago"


def _item(it: ListItem, back: str) -> str:
    fill = "—" if it.fill_pct is None else f"{it.fill_pct:.0f} %"
    where = ""
    if it.lat is not None and it.lon is not None:
        osm = f"https://www.openstreetmap.org/?mlat={it.lat:.6f}&mlon={it.lon:.6f}#map=19/{it.lat:.6f}/{it.lon:.6f}"
        where = f"<a href='{escape(osm)}' rel='noopener'>Map</a>"
    if it.eta_threshold is None:
        eta = ""
    elif it.eta_threshold <= datetime.now(UTC):
        eta = f" · over its threshold since {_when(it.eta_threshold)}"
    else:
        eta = f" · reaches its threshold {_when(it.eta_threshold)}"
    return (
        f"<li class='{it.reason}' data-device='{escape(it.device_id)}'>"
        f"<div class='top'><span class='id'>{escape(it.device_id)}</span>"
        f"<span class='why'>{_REASON[it.reason]}</span><span class='fill'>{fill}</span></div>"
        f"<div class='meta'>{_age(it.reading_age_s)}{eta}"
        f" · last emptied {_when(it.last_emptied)}</div>"
        "<div class='acts'>"
        f"{where}<form method='post' action='/crew/emptied'>"
        f"<input type='hidden' name='device_id' value='{escape(it.device_id)}'>"
        f"<input type='hidden' name='back' value='{escape(back)}'>"
        f"<button type='submit'>Emptied</button></form></div></li>"
    )


def _nav(rounds: list[tuple[str | None, str | None]], stream: str | None, group: str | None) -> str:
    links = [("All columns", None, None)] + [
        (f"{s or 'any stream'} · {g or 'no round'}", s, g) for s, g in rounds
    ]
    out = []
    for label, s, g in links:
        query = urlencode({k: v for k, v in (("stream", s), ("group", g)) if v})
        on = " class='on'" if (s, g) == (stream, group) else ""
        out.append(f"<a{on} href='/crew{'?' + query if query else ''}'>{escape(label)}</a>")
    return "<nav>" + "".join(out) + "</nav>"


def _refused(principal: Principal, permission: Permission) -> HTMLResponse:
    page = _page(
        "Collection list",
        f"<h1>Collection list</h1><p>This {escape(principal.role)} key cannot "
        f"{'record an emptying' if permission is Permission.WASTE_EMPTY else 'open this list'}"
        ". Ask for a crew key.</p>",
    )
    page.status_code = status.HTTP_403_FORBIDDEN
    return page


@router.get(
    "",
    response_class=HTMLResponse,
    summary="The crew's collection list (HTML)",
    description="The key's tenant's columns only. Signs in with a key (form, then a cookie) "
    "or `Authorization: Bearer`.",
    openapi_extra={OPENAPI_KEY: Permission.WASTE_READ.value},
)
async def crew_page(
    request: Request,
    settings: SettingsDep,
    pool: PoolDep,
    stream: Annotated[str | None, Query()] = None,
    group: Annotated[str | None, Query()] = None,
    day: Annotated[date | None, Query(alias="date")] = None,
    done: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    principal = await _principal(request, settings, pool)
    if principal is None:
        return _login()
    if not allowed(principal, Permission.WASTE_READ):
        return _refused(principal, Permission.WASTE_READ)
    try:
        listing: CollectionList = await collection_list(
            pool=pool,
            settings=settings,
            tenant=principal.tenant,
            day=day,
            stream=stream,
            group=group,
        )
    except HTTPException as exc:
        return _page("Collection list", f"<h1>Collection list</h1><p>{escape(str(exc.detail))}</p>")
    back = urlencode({k: v for k, v in (("stream", stream), ("group", group)) if v})
    title = " · ".join(x for x in (stream, group) if x) or "all columns"
    note = f"<p class='done'>{escape(done)} recorded as emptied.</p>" if done else ""
    items = "".join(_item(it, back) for it in listing.items)
    return _page(
        f"Collection list {listing.date.isoformat()}",
        f"<h1>To empty on {listing.date.strftime('%A %d %B %Y')}</h1>"
        f"<p class='sub'>{escape(title)} — {len(listing.items)} column"
        f"{'s' if len(listing.items) != 1 else ''}, most urgent first</p>"
        f"{_nav(await wq.rounds(pool, principal.tenant), stream, group)}{note}"
        + (f"<ol>{items}</ol>" if items else "<p class='empty'>Nothing to empty.</p>"),
    )


@router.post("/login", summary="Open the crew page with a key (form)")
async def crew_login(request: Request, settings: SettingsDep, pool: PoolDep) -> Response:
    key = (await _form(request)).get("key", "")
    if not key or await authenticate(settings, pool, key) is None:
        page = _login("That key is not valid.")
        page.status_code = status.HTTP_401_UNAUTHORIZED
        return page
    response = RedirectResponse("/crew", status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        COOKIE, key, httponly=True, samesite="strict", path="/crew", max_age=12 * 3600
    )
    return response


@router.post(
    "/emptied",
    summary="Record a column emptied by the crew (form)",
    openapi_extra={OPENAPI_KEY: Permission.WASTE_EMPTY.value},
)
async def crew_emptied(request: Request, settings: SettingsDep, pool: PoolDep) -> Response:
    principal = await _principal(request, settings, pool)
    if principal is None:
        return _login("Sign in again to record an emptying.")
    if not allowed(principal, Permission.WASTE_EMPTY):
        return _refused(principal, Permission.WASTE_EMPTY)
    form = await _form(request)
    device_id = form.get("device_id", "")
    if not device_id or len(device_id) > 64:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "which column was emptied?")
    if not await wq.record_emptied(pool, device_id, datetime.now(UTC), principal.tenant):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no waste column {device_id!r}")
    back = parse_qs(form.get("back", ""), max_num_fields=4)
    query = {k: v[0] for k, v in back.items() if k in ("stream", "group") and v}
    query["done"] = device_id
    return RedirectResponse(f"/crew?{urlencode(query)}", status_code=status.HTTP_303_SEE_OTHER)

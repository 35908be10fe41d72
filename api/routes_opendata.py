"""Open data: free places, waste columns and district water consumption for anyone, without a
key, in the formats open-data portals read, and the DCAT-AP catalogue they harvest
(docs/open-data.md). Only what a tenant has chosen to publish is served; an admin chooses with
`PUT /tenants/{tenant}/open-data`.

Every public answer goes through `_serve`: the per-client rate limit, then the process's answer
cache, then (on a miss only) the database. A conditional request matching a cached answer is
answered 304 before anything else is looked at.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from api import opendata_format as fmt
from api.deps import PoolDep, get_pool, get_settings, heavy_slot, require_admin
from api.opendata_cache import AnswerCache, Cached, RateLimiter, etag_matches, retry_after
from api.schemas import ErrorBody
from storage import auth as tenants_db
from storage import opendata as od
from territory.config import Settings

router = APIRouter(tags=["open data"])

# The same answer whether the tenant does not exist or does not publish the dataset: a public
# caller learns nothing about which tenants exist.
NOT_PUBLISHED = "no open data of this kind is published for this tenant"

FREQUENCY = "http://publications.europa.eu/resource/authority/frequency/"
FILE_TYPE = "http://publications.europa.eu/resource/authority/file-type/"
THEME = "http://publications.europa.eu/resource/authority/data-theme/"
IANA = "https://www.iana.org/assignments/media-types/"


@dataclass
class OpenState:
    cache: AnswerCache
    limiter: RateLimiter
    # Builds under way, by cache key: when an entry expires under load, the requests that miss
    # it together wait for one build instead of each querying the database.
    building: dict[tuple[str, str], asyncio.Future[Cached]] = field(default_factory=dict)


def open_state(request: Request) -> OpenState:
    """The process's cache and rate limiter, made on first use from the app's settings."""
    st: OpenState | None = getattr(request.app.state, "open_data", None)
    if st is None:
        settings: Settings = request.app.state.settings
        st = OpenState(
            AnswerCache(settings.open_data_cache_s),
            RateLimiter(settings.open_data_rate_per_s, settings.open_data_burst),
        )
        request.app.state.open_data = st
    return st


async def rate_limited(request: Request) -> None:
    client = request.client.host if request.client else "unknown"
    wait = open_state(request).limiter.take(client)
    if wait > 0:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many requests from this address; retry after `Retry-After` seconds",
            headers={"Retry-After": retry_after(wait)},
        )


Built = tuple[bytes, str]  # body, media type


def _answer(request: Request, entry: Cached, ttl_s: float) -> Response:
    headers = {
        "ETag": entry.etag,
        "Last-Modified": format_datetime(entry.last_modified, usegmt=True),
        "Cache-Control": f"public, max-age={max(0, int(ttl_s))}",
        "Access-Control-Allow-Origin": "*",
    }
    inm = request.headers.get("if-none-match")
    if inm is not None:
        if etag_matches(inm, entry.etag):
            return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    else:
        ims = _http_date(request.headers.get("if-modified-since"))
        if ims is not None and entry.last_modified.replace(microsecond=0) <= ims:
            return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(entry.body, media_type=entry.media_type, headers=headers)


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        t = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


async def _serve(
    request: Request, build: Callable[[], Awaitable[Built]], vary_host: bool = False
) -> Response:
    st = open_state(request)
    query = request.url.query
    if vary_host:
        query = request.headers.get("host", "") + "\n" + query
    key = (request.url.path, query)
    return _answer(request, await _cached_or_built(st, key, build), st.cache.ttl_s)


async def _cached_or_built(
    st: OpenState, key: tuple[str, str], build: Callable[[], Awaitable[Built]]
) -> Cached:
    while True:
        entry = st.cache.get(key)
        if entry is not None:
            return entry
        pending = st.building.get(key)
        if pending is None:
            break
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not pending.cancelled() or (task is not None and task.cancelling()):
                raise
            # The request that was building went away: build in its place.
    future: asyncio.Future[Cached] = asyncio.get_running_loop().create_future()
    st.building[key] = future
    try:
        body, media_type = await build()
        entry = st.cache.put(key, body, media_type, datetime.now(UTC).replace(microsecond=0))
        future.set_result(entry)
        return entry
    except Exception as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: no warning when nobody else was waiting
        raise
    except BaseException:
        future.cancel()
        raise
    finally:
        del st.building[key]


def _unprocessable(param: str, msg: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"loc": ["query", param], "msg": msg, "type": "value_error"}],
    )


async def _tenants(pool: PoolDep, dataset: od.Dataset, tenant: str | None) -> list[str]:
    published = [t.id for t in await od.publishing_tenants(pool, dataset)]
    if tenant is None:
        return published
    if tenant not in published:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_PUBLISHED)
    return [tenant]


def _form(options: str | None, format_: str | None) -> fmt.Form:
    if format_ in ("geojson", "csv"):
        if options is not None:
            raise _unprocessable("options", "options applies to the NGSI-LD form only")
        return format_
    return "keyValues" if options == "keyValues" else "normalized"


TenantQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=64,
        description="One tenant; default: every tenant that publishes this dataset",
    ),
]
OptionsQuery = Annotated[
    Literal["keyValues"] | None,
    Query(description="keyValues: the simplified NGSI-LD form (bare values)"),
]
FormatQuery = Annotated[
    Literal["ngsi-ld", "geojson", "csv"] | None,
    Query(
        alias="format",
        description="ngsi-ld (default), geojson, or csv (semicolon-separated, UTF-8)",
    ),
]

PUBLIC_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "application/ld+json": {},
            "application/geo+json": {},
            "text/csv": {},
        },
        "description": "The entities, in the form asked for",
    },
    304: {"description": "Not modified (If-None-Match or If-Modified-Since)"},
    404: {"model": ErrorBody, "description": NOT_PUBLISHED},
    422: {"model": ErrorBody, "description": "Invalid query parameter"},
    429: {"model": ErrorBody, "description": "Rate limit: retry after `Retry-After` seconds"},
    503: {
        "model": ErrorBody,
        "description": "The database is unavailable or too many large reads are running; "
        "retry after `Retry-After` seconds",
    },
}


@router.get(
    "/open/parking/zones",
    summary="Free places per parking zone now, as Smart Data Models ParkingGroup entities",
    description="One ParkingGroup per tenant and zone: `totalSpotNumber` = active spaces, "
    "`availableSpotNumber` = spaces whose newest reading is fresh and says free (a space not "
    "heard from within its freshness window is neither free nor occupied), location = the "
    "centroid of the zone's spaces.",
    response_class=Response,
    responses=PUBLIC_RESPONSES,
    dependencies=[Depends(rate_limited)],
)
async def open_parking_zones(
    request: Request,
    tenant: TenantQuery = None,
    options: OptionsQuery = None,
    format_: FormatQuery = None,
) -> Response:
    form = _form(options, format_)

    async def build() -> Built:
        pool = get_pool(request)
        settings = get_settings(request)
        ids = await _tenants(pool, "parking", tenant)
        rows = await od.parking_zones(pool, ids, settings.parking_freshness_s) if ids else []
        ents = [fmt.parking_entity(z) for z in rows]
        return fmt.render(form, ents, fmt.PARKING_CSV), fmt.MEDIA_TYPES[form]

    return await _serve(request, build)


@router.get(
    "/open/waste/containers",
    summary="Waste columns' fill level and status, as Smart Data Models WasteContainer entities",
    description="One WasteContainer per active, located column: `fillingLevel` 0..1, "
    "`status` (burning, dropped, lidOpen from the newest reading's alarms; unknown when never "
    "heard from), `nextActuationDeadline` = when the column is forecast to reach its "
    "threshold.",
    response_class=Response,
    responses=PUBLIC_RESPONSES,
    dependencies=[Depends(rate_limited)],
)
async def open_waste_containers(
    request: Request,
    tenant: TenantQuery = None,
    options: OptionsQuery = None,
    format_: FormatQuery = None,
) -> Response:
    form = _form(options, format_)

    async def build() -> Built:
        pool = get_pool(request)
        ids = await _tenants(pool, "waste", tenant)
        # A territory's columns make a large answer: one of the few heavy-read slots.
        async with heavy_slot(request):
            rows = await od.waste_columns(pool, ids) if ids else []
        ents = [fmt.waste_entity(c) for c in rows]
        return fmt.render(form, ents, fmt.WASTE_CSV), fmt.MEDIA_TYPES[form]

    return await _serve(request, build)


def _month_bounds(month: str, tz: str) -> tuple[datetime, datetime]:
    year, mon = int(month[:4]), int(month[5:])
    zone = ZoneInfo(tz)
    start = datetime(year, mon, 1, tzinfo=zone)
    end = datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def _last_complete_month(tz: str) -> str:
    now = datetime.now(ZoneInfo(tz))
    year, mon = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
    return f"{year:04d}-{mon:02d}"


@router.get(
    "/open/water/consumption",
    summary="Water consumed per district and month, as WaterConsumptionObserved entities",
    description="Per tenant and district, the volume consumed over a local month "
    "(TERRITORY_WATER_TZ), in litres (unitCode LTR), never per meter. A district with fewer "
    "contributing meters than TERRITORY_OPEN_DATA_MIN_METERS (default 10, never below 5) is "
    "not published.",
    response_class=Response,
    responses=PUBLIC_RESPONSES,
    dependencies=[Depends(rate_limited)],
)
async def open_water_consumption(
    request: Request,
    tenant: TenantQuery = None,
    month: Annotated[
        str | None,
        Query(
            pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$",
            description="YYYY-MM; default: the last complete month",
        ),
    ] = None,
    options: OptionsQuery = None,
    format_: FormatQuery = None,
) -> Response:
    form = _form(options, format_)
    settings = get_settings(request)
    chosen = month or _last_complete_month(settings.water_tz)
    if int(chosen[:4]) < 1900:
        raise _unprocessable("month", "month must be 1900-01 or later")

    async def build() -> Built:
        pool = get_pool(request)
        ids = await _tenants(pool, "water", tenant)
        start, end = _month_bounds(chosen, settings.water_tz)
        # A month of every meter's hours is summed per district: one of the heavy-read slots.
        async with heavy_slot(request):
            rows = (
                await od.water_district_months(pool, ids, start, end, settings.open_data_min_meters)
                if ids
                else []
            )
        ents = [fmt.water_entity(d, chosen, start, end) for d in rows]
        return fmt.render(form, ents, fmt.WATER_CSV), fmt.MEDIA_TYPES[form]

    return await _serve(request, build)


# --- the catalogue ---------------------------------------------------------------------------

_DATASETS: dict[od.Dataset, dict[str, Any]] = {
    "parking": {
        "path": "/open/parking/zones",
        "entity": "ParkingGroup",
        "title": "Places de stationnement libres par zone / Free parking places per zone",
        "description": "Live number of free, occupied and total on-street spaces per zone, "
        "from in-ground parking sensors.",
        "frequency": "UPDATE_CONT",
        "theme": "TRAN",
        "keywords": ["stationnement", "parking", "mobilité", "temps réel"],
    },
    "waste": {
        "path": "/open/waste/containers",
        "entity": "WasteContainer",
        "title": "Remplissage des colonnes d'apport volontaire / Waste column fill levels",
        "description": "Fill level, status and forecast collection date of each waste column.",
        "frequency": "UPDATE_CONT",
        "theme": "ENVI",
        "keywords": ["déchets", "waste", "collecte", "colonnes"],
    },
    "water": {
        "path": "/open/water/consumption",
        "entity": "WaterConsumptionObserved",
        "title": "Consommation d'eau par quartier et par mois / Water consumption per district "
        "and month",
        "description": "Monthly water volume (litres) per district, aggregated over at least "
        "the minimum number of meters; no individual meter is published. Add ?month=YYYY-MM "
        "for another month than the last complete one.",
        "frequency": "MONTHLY",
        "theme": "ENVI",
        "keywords": ["eau", "water", "consommation", "quartier"],
    },
}

_DISTRIBUTIONS = [
    ("", "NGSI-LD normalized", "application/ld+json", "JSON_LD"),
    ("options=keyValues", "NGSI-LD keyValues", "application/ld+json", "JSON_LD"),
    ("format=geojson", "GeoJSON", "application/geo+json", "GEOJSON"),
    ("format=csv", "CSV (semicolon-separated, UTF-8)", "text/csv", "CSV"),
]


def catalog_document(
    base: str, settings: Settings, tenants: Sequence[od.PublishedTenant]
) -> dict[str, Any]:
    licence = {"@id": settings.open_data_licence}
    datasets = []
    for t in tenants:
        for ds in t.datasets:
            spec = _DATASETS[ds]
            url = f"{base}{spec['path']}?tenant={quote(t.id, safe='')}"
            distributions = []
            for extra, title, media, ftype in _DISTRIBUTIONS:
                durl = f"{url}&{extra}" if extra else url
                distributions.append(
                    {
                        "@id": durl,
                        "@type": "dcat:Distribution",
                        "dct:title": title,
                        "dcat:accessURL": {"@id": durl},
                        "dcat:downloadURL": {"@id": durl},
                        "dcat:mediaType": {"@id": IANA + media},
                        "dct:format": {"@id": FILE_TYPE + ftype},
                        "dct:license": licence,
                        "dct:conformsTo": {"@id": fmt.SCHEMAS[spec["entity"]]},
                    }
                )
            datasets.append(
                {
                    "@id": f"{base}/open/catalog#{quote(t.id, safe='')}-{ds}",
                    "@type": "dcat:Dataset",
                    "dct:identifier": f"{t.id}-{ds}",
                    "dct:title": f"{spec['title']} — {t.name}",
                    "dct:description": spec["description"],
                    "dct:publisher": {"@type": "foaf:Agent", "foaf:name": t.name},
                    "dct:license": licence,
                    "dct:accrualPeriodicity": {"@id": FREQUENCY + spec["frequency"]},
                    "dcat:theme": {"@id": THEME + spec["theme"]},
                    "dcat:keyword": spec["keywords"],
                    "dct:conformsTo": {"@id": fmt.SCHEMAS[spec["entity"]]},
                    "dcat:landingPage": {"@id": f"{base}/docs"},
                    "dcat:distribution": distributions,
                }
            )
    return {
        "@context": {
            "dcat": "http://www.w3.org/ns/dcat#",
            "dct": "http://purl.org/dc/terms/",
            "foaf": "http://xmlns.com/foaf/0.1/",
            "xsd": "http://www.w3.org/2001/XMLSchema#",
        },
        "@id": f"{base}/open/catalog",
        "@type": "dcat:Catalog",
        "dct:title": "Données ouvertes du territoire / Territory open data",
        "dct:description": "Open data published by the territory's telemetry platform: what "
        "each tenant chose to publish.",
        "dct:publisher": {"@type": "foaf:Agent", "foaf:name": settings.open_data_publisher},
        "dct:license": licence,
        "dct:rights": settings.open_data_licence_title,
        "dct:modified": {
            "@value": fmt.iso(datetime.now(UTC).replace(microsecond=0)),
            "@type": "xsd:dateTime",
        },
        "dcat:dataset": datasets,
    }


@router.get(
    "/open/catalog",
    summary="DCAT-AP catalogue (JSON-LD) of the published datasets, for portals to harvest",
    response_class=Response,
    responses={
        200: {"content": {"application/ld+json": {}}, "description": "The catalogue"},
        304: PUBLIC_RESPONSES[304],
        429: PUBLIC_RESPONSES[429],
    },
    dependencies=[Depends(rate_limited)],
)
async def open_catalog(request: Request) -> Response:
    settings = get_settings(request)
    base = settings.open_data_base_url.rstrip("/") or str(request.base_url).rstrip("/")

    async def build() -> Built:
        tenants = await od.publishing_tenants(get_pool(request))
        body = fmt.json_bytes(catalog_document(base, settings, tenants))
        return body, "application/ld+json"

    return await _serve(request, build, vary_host=not settings.open_data_base_url)


# --- the admin's choice ------------------------------------------------------------------------


class OpenDataChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parking: StrictBool
    waste: StrictBool
    water: StrictBool


class TenantOpenData(BaseModel):
    tenant: str
    name: str
    open_data: dict[str, bool] = Field(description="What the tenant publishes under /open/")


@router.put(
    "/tenants/{tenant}/open-data",
    response_model=TenantOpenData,
    summary="Choose what a tenant publishes as open data (admin)",
    description="All three flags are required. Public answers already cached by an API "
    "process may be served for up to TERRITORY_OPEN_DATA_CACHE_S more seconds.",
    responses={
        401: {"model": ErrorBody, "description": "Missing or wrong bearer key"},
        404: {"model": ErrorBody, "description": "Unknown tenant"},
        422: {"model": ErrorBody, "description": "Not exactly three booleans"},
    },
    dependencies=[Depends(require_admin)],
)
async def set_tenant_open_data(
    request: Request,
    pool: PoolDep,
    choice: OpenDataChoice,
    tenant: Annotated[str, Path(min_length=1, max_length=64)],
) -> TenantOpenData:
    row = await tenants_db.set_open_data(pool, tenant, choice.model_dump())
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"tenant {tenant!r} not found")
    open_state(request).cache.clear()
    return TenantOpenData(tenant=row.id, name=row.name, open_data=row.open_data)


# HEAD, as harvesters check ETag and Last-Modified for changes: the same handlers (uvicorn
# leaves the body out), kept out of the OpenAPI document where they would repeat the GETs.
for _path, _endpoint in (
    ("/open/parking/zones", open_parking_zones),
    ("/open/waste/containers", open_waste_containers),
    ("/open/water/consumption", open_water_consumption),
    ("/open/catalog", open_catalog),
):
    router.add_api_route(
        _path,
        _endpoint,
        methods=["HEAD"],
        response_class=Response,
        include_in_schema=False,
        dependencies=[Depends(rate_limited)],
    )

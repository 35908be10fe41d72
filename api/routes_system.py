from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from api.authz import Permission, require
from api.deps import HealthPoolDep
from api.metrics import exposition
from api.schemas import DecoderOut, Health, KindFieldOut, KindOut
from devices.decoders import DECODERS
from devices.kinds import all_specs
from storage.errors import is_transient
from storage.readings import server_info

router = APIRouter(tags=["system"])

# /health answers from its own connection, never queued behind the API's pool; a database
# that does not answer within this long is reported as unavailable.
HEALTH_TIMEOUT_S = 2.0


@router.get(
    "/health",
    response_model=Health,
    summary="Liveness and storage backend",
    description="Uses a connection of its own, so it answers while heavy reads hold the "
    "API's pool.",
)
async def health(pool: HealthPoolDep) -> Health:
    try:
        async with pool.acquire(timeout=HEALTH_TIMEOUT_S) as conn:
            info = await server_info(conn, timeout_s=HEALTH_TIMEOUT_S)
    except Exception as exc:
        if not is_transient(exc):
            raise
        return Health(
            status="degraded",
            storage="unavailable",
            postgresql_version=None,
            timescaledb_version=None,
        )
    return Health(
        status="ok",
        storage="timescaledb" if info["timescaledb"] else "postgresql",
        postgresql_version=info["postgresql"],
        timescaledb_version=info["timescaledb"],
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics of this API process",
    description="Request counts and latencies by route template and status, in Prometheus' "
    "text format. No key: scraped by Prometheus; it carries no device or tenant data.",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def prometheus_metrics() -> Response:
    return exposition()


@router.get(
    "/decoders",
    response_model=list[DecoderOut],
    tags=["devices"],
    summary="Payload decoders a device can be bound to",
    dependencies=[require(Permission.READ)],
)
async def list_decoders() -> list[DecoderOut]:
    return [
        DecoderOut(
            name=d.info.name,
            vendor=d.info.vendor,
            model=d.info.model,
            kind=d.info.kind,
            description=d.info.description,
        )
        for d in sorted(DECODERS.values(), key=lambda d: d.info.name)
    ]


@router.get(
    "/kinds",
    response_model=list[KindOut],
    tags=["devices"],
    summary="Device kinds: what a reading of each holds, and what registering one takes",
    description="From each kind's declaration: the fields of its readings (and of its native "
    "MQTT payload), with units and valid ranges; its alarms; the JSON schema of its "
    "registration `attributes`.",
    dependencies=[require(Permission.READ)],
)
async def list_kinds() -> list[KindOut]:
    return [
        KindOut(
            kind=s.kind,
            description=s.description,
            fields=[
                KindFieldOut(
                    name=f.name,
                    type=f.type,
                    required=f.required,
                    unit=f.measure.unit,
                    min=f.measure.ge,
                    max=f.measure.le,
                    description=f.measure.description,
                )
                for f in s.fields
            ],
            alarms=list(s.alarms),
            attributes_schema=s.attributes.model_json_schema(),
        )
        for s in all_specs()
    ]

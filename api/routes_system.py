from __future__ import annotations

from fastapi import APIRouter

from api.deps import PoolDep
from api.schemas import Health
from storage.errors import is_transient
from storage.readings import server_info

router = APIRouter(tags=["system"])


@router.get("/health", response_model=Health, summary="Liveness and storage backend")
async def health(pool: PoolDep) -> Health:
    try:
        info = await server_info(pool)
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

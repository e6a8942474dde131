"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from nudge.api.deps import PlatformDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(platform: PlatformDep) -> JSONResponse:
    try:
        await platform.db.ping()
    except Exception as exc:
        return JSONResponse(
            {"status": "unavailable", "detail": f"database: {type(exc).__name__}"}, status_code=503
        )
    return JSONResponse(
        {"status": "ok", "providers": sorted(platform.providers), "off": platform.unconfigured}
    )


@router.get("/metrics")
async def metrics(platform: PlatformDep) -> Response:
    return Response(platform.metrics.render(), media_type=CONTENT_TYPE_LATEST)

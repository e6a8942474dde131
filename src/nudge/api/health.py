"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from nudge.api.deps import PlatformDep
from nudge.sdk.models import Ready, Status

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Status)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Ready, response_model_exclude_none=True)
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


@router.get(
    "/metrics", responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}}
)
async def metrics(platform: PlatformDep) -> Response:
    return Response(platform.metrics.render(), media_type=CONTENT_TYPE_LATEST)

"""The FastAPI application factory."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from nudge import __version__
from nudge.api import apps, console, direct, health, integrations, preferences, proactive, users
from nudge.api.asgi import SafeJSONResponse
from nudge.api.deps import TextInputDep
from nudge.api.direct_route import DirectNotificationRoute, add_openapi_entry
from nudge.api.docs import install_docs
from nudge.api.errors import install_error_handlers
from nudge.api.guard import RequestGuard
from nudge.api.proactive import FastSegments
from nudge.config import Settings
from nudge.platform import Platform


def tune_garbage_collector() -> None:
    """After start-up, for a serving process: the collector was ~11 % of a delivery worker's time
    (py-spy) re-scanning objects that live as long as the process. ``gc.freeze()`` moves those out
    of its sight and a larger young generation makes collections rarer; the hot paths make no
    cyclic garbage of their own (figures: docs/decisions.md)."""
    gc.freeze()
    gc.set_threshold(10_000, 50, 50)


def create_app(settings: Settings, *, platform: Platform | None = None) -> FastAPI:
    """Build the app. With ``platform`` given, the caller owns its lifecycle (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if platform is not None:
            app.state.platform = platform
            yield
            return
        app.state.platform = await Platform.start(settings)
        tune_garbage_collector()
        try:
            yield
        finally:
            await app.state.platform.close()

    app = FastAPI(
        title="Nudge",
        version=__version__,
        description="Self-hostable, Omi-compatible notifications for conversational-AI apps.",
        lifespan=lifespan,
        docs_url=None,  # served by install_docs, without a CDN
        redoc_url=None,
        # Hostile text: refused once (parameters and JSON bodies), never failing an answer.
        dependencies=[TextInputDep],
        default_response_class=SafeJSONResponse,
        # Our metrics are Prometheus at /metrics. FastAPI's own OpenTelemetry hooks would look up
        # the global providers (and the environment) on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    install_docs(app)
    # A worker process serves only /healthz, /readyz and /metrics (probes and Prometheus).
    api = (
        ()
        if settings.role == "worker"
        else (direct, apps, users, preferences, proactive, console, integrations)
    )
    for module in (health, *api):
        app.include_router(module.router)
    if api:
        app.add_middleware(FastSegments)
        app.add_middleware(DirectNotificationRoute)
        add_openapi_entry(app)
    # Outermost (added last): sizes and refused credentials are checked before anything else.
    app.add_middleware(RequestGuard, settings=settings)
    return app

"""The operator's HTTP endpoints: liveness, readiness and Prometheus metrics.

Every process serves :func:`health_app` on its health port
(``SCEPLINE_HEALTH_HOST``/``SCEPLINE_HEALTH_PORT``). The public SCEP port keeps
only ``/healthz`` and ``/readyz`` (:func:`health_routes`), which load balancers
probe and which reveal nothing; metrics stay off it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, FastAPI
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

__all__ = ["ReadinessCheck", "health_app", "health_routes"]

ReadinessCheck = Callable[[], Awaitable[bool]]


def health_routes(ready: ReadinessCheck | None = None) -> APIRouter:
    """``/healthz`` (the process answers) and ``/readyz`` (``ready`` says so)."""
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    @router.get("/readyz")
    async def readyz() -> PlainTextResponse:
        is_ready = ready is None or await ready()
        return PlainTextResponse("ready\n" if is_ready else "not ready\n", 200 if is_ready else 503)

    return router


def health_app(
    ready: ReadinessCheck | None = None, *, registry: CollectorRegistry = REGISTRY
) -> FastAPI:
    """The app of the health port: :func:`health_routes` and ``/metrics`` of
    ``registry`` (this process's, or several processes' gathered by
    ``prometheus_client.multiprocess``)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(health_routes(ready))

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app

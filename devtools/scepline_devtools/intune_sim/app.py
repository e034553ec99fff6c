"""The simulator's ASGI app: Entra, Graph and the Intune FE services on one host."""

from __future__ import annotations

from fastapi import FastAPI

from .admin import admin_router
from .entra import entra_router
from .errors import SimHttpError, render_error
from .faults import SimulatorMiddleware
from .graph import graph_router
from .pki_connector import pki_router
from .scep_actions import scep_router
from .state import SimulatorState

__all__ = ["create_simulator"]


def create_simulator(state: SimulatorState) -> FastAPI:
    """One app serving every simulated service; `state` is shared, not copied."""
    app = FastAPI(
        title="scepline Intune simulator",
        docs_url="/_sim/docs",
        redoc_url=None,
        openapi_url="/_sim/openapi.json",
    )
    app.state.simulator = state
    for router in (admin_router, entra_router, graph_router, scep_router, pki_router):
        app.include_router(router)
    app.add_exception_handler(SimHttpError, render_error)
    # Outermost, so faults replace whole exchanges and every call is recorded.
    app.add_middleware(SimulatorMiddleware, state=state)
    return app

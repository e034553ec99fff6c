"""The admin port's app: the management API under ``/api/v1`` (its OpenAPI
document at ``/api/v1/openapi.json``) and the console at ``/``."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from .api import api_router
from .console import HERE, LoginNeeded, console_router, render_error
from .context import AdminContext
from .errors import install_error_handlers
from .security import FailureLimiter, SecureHeaders, SessionSigner

__all__ = ["build_admin_app"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def build_admin_app(context: AdminContext) -> FastAPI:
    settings = context.settings
    app = FastAPI(
        title="scepline management API",
        version="1",
        description=(
            "Operator actions on a scepline deployment. Every route needs "
            "`Authorization: Bearer <token>` (`scepline admin token create --role "
            "viewer|operator`); acting needs an operator token. Errors are JSON: "
            '`{"error": CODE, "detail": TEXT}`.'
        ),
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
    )
    app.state.admin = context
    app.state.limiter = FailureLimiter(
        allowed=settings.admin_auth_failures_allowed,
        window=settings.admin_auth_failure_window_seconds,
    )
    app.state.sessions = SessionSigner(lifetime_seconds=settings.admin_session_minutes * 60)
    app.add_middleware(SecureHeaders)
    install_error_handlers(app, render_error)

    @app.middleware("http")
    async def no_control_characters(request: Request, call_next: Any) -> Response:
        """A NUL (or another control character) in a path or query is bad input
        here, not something to hand the database (PostgreSQL refuses NUL in text)."""
        # The decoded path as the server gave it (a URL object drops newlines).
        path = str(request.scope.get("path", ""))
        query = unquote(request.scope.get("query_string", b"").decode("latin-1"))
        if _CONTROL.search(path) or _CONTROL.search(query):
            detail = "control characters in the path or query"
            if path.startswith("/api/"):
                return JSONResponse({"error": "bad_request", "detail": detail}, status_code=400)
            return render_error(request, 400, "bad request", detail)
        return await call_next(request)  # type: ignore[no-any-return]

    @app.exception_handler(LoginNeeded)
    async def login_needed(request: Request, _error: LoginNeeded) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method != "GET":
            target = "/"
        return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)

    app.include_router(api_router)
    app.include_router(console_router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    return app

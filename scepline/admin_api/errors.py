"""How the admin port refuses: JSON on ``/api``, a page in the console."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from scepline_shared.broker.base import BrokerUnavailable
from scepline_shared.log import get_logger

from ..actions import ActionError

__all__ = ["ApiError", "install_error_handlers"]

log = get_logger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    429: "too_many_failures",
    503: "unavailable",
}


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, detail: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def install_error_handlers(app: FastAPI, page: Any) -> None:
    """``page(request, status, title, detail)`` renders the console's refusals."""

    def answer(
        request: Request, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> Response:
        if _is_api(request):
            if status == 401:
                headers = {"www-authenticate": "Bearer", **(headers or {})}
            return JSONResponse(
                {"error": code, "detail": detail}, status_code=status, headers=headers
            )
        return page(request, status, code.replace("_", " "), detail, headers)  # type: ignore[no-any-return]

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> Response:
        return answer(request, error.status, error.code, error.detail, error.headers)

    @app.exception_handler(ActionError)
    async def action_error(request: Request, error: ActionError) -> Response:
        status = 404 if error.kind == "not_found" else 400
        return answer(request, status, _CODES[status], str(error))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        problems = []
        for problem in error.errors():
            where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body")
            problems.append(f"{where or 'body'}: {problem.get('msg', 'invalid')}")
        return answer(request, 400, "bad_request", "; ".join(problems)[:1000] or "bad request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        code = _CODES.get(error.status_code, "error")
        detail = str(error.detail) if error.detail else code
        return answer(request, error.status_code, code, detail, dict(error.headers or {}))

    @app.exception_handler(BrokerUnavailable)
    async def broker_down(request: Request, error: BrokerUnavailable) -> Response:
        return answer(request, 503, "unavailable", f"the broker cannot do it now: {error}"[:500])

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        from sqlalchemy.exc import DBAPIError, OperationalError

        if isinstance(error, OperationalError | DBAPIError | OSError | TimeoutError):
            log.warning("admin request failed: a part is down", error=str(error)[:300])
            return answer(request, 503, "unavailable", "the store cannot be reached now")
        log.exception("admin request failed")
        return answer(request, 500, "internal_error", "unexpected failure; see the logs")

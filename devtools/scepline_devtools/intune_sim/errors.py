"""Error bodies in each Microsoft service's own shape.

Entra answers ``{"error", "error_description": "AADSTS…", "error_codes"}``;
Graph answers ``{"error": {"code", "message", "innerError"}}``; the Intune FE
services answer the OData error whose ``message`` is itself a JSON document
(docs/specs/intune-api.md, "Calls, results and errors"). Clients parse these
differently, so the simulator keeps them apart.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from .models import Route

__all__ = [
    "ENTRA_ROUTES",
    "GRAPH_ROUTES",
    "AadError",
    "FeError",
    "GraphError",
    "SimHttpError",
    "aad_body",
    "fe_body",
    "graph_body",
    "render_error",
]

ENTRA_ROUTES = frozenset(
    {Route.INSTANCE_DISCOVERY, Route.OPENID_CONFIGURATION, Route.JWKS, Route.TOKEN}
)
GRAPH_ROUTES = frozenset({Route.GRAPH_ENDPOINTS})


class SimHttpError(Exception):
    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers or {}


class AadError(SimHttpError):
    def __init__(self, status: int, error: str, aadsts: int, description: str) -> None:
        super().__init__(status)
        self.error, self.aadsts, self.description = error, aadsts, description


class GraphError(SimHttpError):
    def __init__(self, status: int, code: str, message: str, **headers: str) -> None:
        super().__init__(status, headers)
        self.code, self.message = code, message


class FeError(SimHttpError):
    def __init__(
        self, status: int, code: str, message: str, retry_after: int | None = None, **headers: str
    ) -> None:
        if retry_after:
            headers["Retry-After"] = str(retry_after)
        super().__init__(status, headers)
        self.code, self.message, self.retry_after = code, message, retry_after


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def aad_body(error: str, aadsts: int, description: str, client_request_id: str) -> dict[str, Any]:
    trace_id = str(uuid.uuid4())
    stamp = _now().strftime("%Y-%m-%d %H:%M:%SZ")
    return {
        "error": error,
        "error_description": (
            f"AADSTS{aadsts}: {description} Trace ID: {trace_id} "
            f"Correlation ID: {client_request_id} Timestamp: {stamp}"
        ),
        "error_codes": [aadsts],
        "timestamp": stamp,
        "trace_id": trace_id,
        "correlation_id": client_request_id,
        "error_uri": f"https://login.microsoftonline.com/error?code={aadsts}",
    }


def graph_body(code: str, message: str, client_request_id: str) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": _now().strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": str(uuid.uuid4()),
                "client-request-id": client_request_id,
            },
        }
    }


def fe_body(
    code: str, message: str, client_request_id: str, url: str, retry_after: int | None = None
) -> dict[str, Any]:
    activity = client_request_id or str(uuid.uuid4())
    # Intune serialises this inner document with CRLF and two-space indents.
    inner = json.dumps(
        {
            "_version": 3,
            "Message": (
                f"{message} - Operation ID (for customer support): "
                f"00000000-0000-0000-0000-000000000000 - Activity ID: {activity} - Url: {url}"
            ),
            "CustomApiErrorPhrase": "",
            "RetryAfter": retry_after,
            "ErrorSourceService": "",
            "HttpHeaders": "{}",
        },
        indent=2,
    ).replace("\n", "\r\n")
    return {
        "error": {
            "code": code,
            "message": inner,
            "innerError": {
                "date": _now().strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": str(uuid.uuid4()),
                "client-request-id": client_request_id,
            },
        }
    }


def render_error(request: Request, exc: Exception) -> Response:
    """FastAPI exception handler for every SimHttpError subclass."""
    assert isinstance(exc, SimHttpError)
    client_request_id = request.headers.get("client-request-id", "")
    headers = {**exc.headers, "client-request-id": client_request_id}
    if isinstance(exc, AadError):
        body = aad_body(exc.error, exc.aadsts, exc.description, client_request_id)
    elif isinstance(exc, GraphError):
        body = graph_body(exc.code, exc.message, client_request_id)
    elif isinstance(exc, FeError):
        body = fe_body(exc.code, exc.message, client_request_id, str(request.url), exc.retry_after)
    else:
        return Response(status_code=exc.status, headers=headers)
    return JSONResponse(body, status_code=exc.status, headers=headers)

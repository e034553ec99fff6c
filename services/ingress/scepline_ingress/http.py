"""The SCEP HTTP binding (RFC 8894 §4) and the health/metrics endpoints.

Only HTTP concerns live here: routing, decoding the GET message from the raw
query string, the body size limit and content types.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from scepline_shared.metrics import SCEP_REQUESTS

from .errors_to_response import pki_response, response_for_error
from .service import ScepService

__all__ = ["create_app", "decode_get_message", "is_scep_path"]

ReadinessCheck = Callable[[], Awaitable[bool]]

_SCEP_ROOT = "scep"
_WINDOWS_SUFFIX = "pkiclient.exe"


def is_scep_path(path: str) -> bool:
    """``/scep``, ``/cgi-bin/pkiclient.exe`` and anything ending in pkiclient.exe.

    Windows appends ``/pkiclient.exe`` to whatever URL Intune gives it.
    """
    stripped = path.strip("/")
    return stripped == _SCEP_ROOT or stripped.endswith(_WINDOWS_SUFFIX)


def query_parameters(raw_query: bytes) -> dict[str, bytes]:
    """Split the raw query without turning '+' into a space (macOS sends '+' raw)."""
    parameters: dict[str, bytes] = {}
    for pair in raw_query.split(b"&"):
        name, _, value = pair.partition(b"=")
        key = urllib.parse.unquote_to_bytes(name).decode("latin-1")
        parameters.setdefault(key, urllib.parse.unquote_to_bytes(value))
    return parameters


def decode_get_message(value: bytes) -> bytes:
    """Base64 of a pkiMessage as clients really send it: line breaks, no padding,
    url-safe alphabet or raw '+' and '/'."""
    compact = b"".join(value.split()).replace(b"-", b"+").replace(b"_", b"/")
    compact += b"=" * (-len(compact) % 4)
    return base64.b64decode(compact, validate=True)


def create_app(
    service: ScepService,
    *,
    max_body_bytes: int,
    readiness: ReadinessCheck | None = None,
    lifespan: Callable[[FastAPI], object] | None = None,
) -> FastAPI:
    app = FastAPI(title="scepline", docs_url=None, redoc_url=None, lifespan=lifespan)  # type: ignore[arg-type]

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> PlainTextResponse:
        ready = readiness is None or await readiness()
        return PlainTextResponse("ready\n" if ready else "not ready\n", 200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.api_route("/{path:path}", methods=["GET", "POST"], include_in_schema=False)
    async def scep(path: str, request: Request) -> Response:
        if not is_scep_path(path):
            return PlainTextResponse("not found\n", status_code=404)
        parameters = query_parameters(request.scope.get("query_string", b""))
        operation = parameters.get("operation", b"").decode("latin-1")
        if operation == "GetCACaps":
            SCEP_REQUESTS.labels(operation, "", "ok").inc()
            return PlainTextResponse("\n".join(service.capabilities()) + "\n")
        if operation == "GetCACert":
            SCEP_REQUESTS.labels(operation, "", "ok").inc()
            return Response(service.ca_certificates(), media_type="application/x-x509-ca-ra-cert")
        if operation == "GetNextCACert":
            body = service.next_ca_certificate()
            if body is None:
                SCEP_REQUESTS.labels(operation, "", "none").inc()
                return PlainTextResponse("no next CA certificate is staged\n", status_code=404)
            SCEP_REQUESTS.labels(operation, "", "ok").inc()
            return Response(body, media_type="application/x-x509-next-ca-cert")
        if operation != "PKIOperation":
            SCEP_REQUESTS.labels("unknown", "", "bad_operation").inc()
            return PlainTextResponse("unknown or missing operation\n", status_code=400)
        message = await _read_message(request, parameters, max_body_bytes)
        if isinstance(message, Response):
            return message
        try:
            reply = await service.pki_operation(message)
        except Exception as error:  # noqa: BLE001 - the mapper decides what the client sees
            return response_for_error(error, service)
        return pki_response(reply)

    return app


async def _read_message(
    request: Request, parameters: dict[str, bytes], max_body_bytes: int
) -> bytes | Response:
    if request.method == "GET":
        raw = parameters.get("message", b"")
        if len(raw) > max_body_bytes * 2:
            return _too_large()
        try:
            message = decode_get_message(raw)
        except (binascii.Error, ValueError):
            return _bad_request("message is not base64")
    else:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_body_bytes):
            return _too_large() if declared.isdigit() else _bad_request("bad Content-Length")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                return _too_large()
        message = bytes(body)
    if not message:
        return _bad_request("empty PKIOperation message")
    if len(message) > max_body_bytes:
        return _too_large()
    return message


def _too_large() -> Response:
    SCEP_REQUESTS.labels("PKIOperation", "unknown", "too_large").inc()
    return PlainTextResponse("PKIOperation message too large\n", status_code=413)


def _bad_request(reason: str) -> Response:
    SCEP_REQUESTS.labels("PKIOperation", "unknown", "malformed").inc()
    return PlainTextResponse(f"{reason}\n", status_code=400)

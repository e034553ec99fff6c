"""The OCSP HTTP binding (RFC 6960 appendix A, RFC 5019 5): ``POST /ocsp`` and
``GET /ocsp/<url-encoded base64 DER request>`` (and both for a responder URL
written ``<base>/ocsp/``: ``POST /ocsp/``, ``GET /ocsp//<request>``).

Served on the SCEP port by ingress and ``scepline up``, and alone by
``scepline ocsp``. Everything a client sends gets an OCSPResponse or a 4xx:
an unreadable request is answered malformedRequest (HTTP 200, what OpenSSL's
responder and most appliances expect), a POST with another content type 400.
Answers without a nonce carry RFC 5019 caching headers, so a CDN or reverse
proxy in front can serve them; ``If-None-Match`` gets a 304.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import urllib.parse
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from scepline_shared.ocsp.codec import ResponseStatus, error_response
from scepline_shared.ocsp.responder import OcspAnswer, OcspResponder

__all__ = ["OCSP_REQUEST", "OCSP_RESPONSE", "decode_get_request", "ocsp_routes"]

OCSP_REQUEST = "application/ocsp-request"
OCSP_RESPONSE = "application/ocsp-response"
_PREFIX = b"/ocsp/"


def decode_get_request(raw_path: bytes) -> bytes:
    """The DER request of a GET path (``/ocsp/<base64>``), as clients send it:
    URL-encoded or not (slashes escaped as %2F or left raw), standard or
    url-safe alphabet, padding optional, after any number of slashes (a client
    given the URL ``<base>/ocsp/`` appends ``/<base64>``; the base64 of a DER
    request starts with ``M``, never a slash). ValueError if it is not base64."""
    if not raw_path.startswith(_PREFIX):
        raise ValueError("not an /ocsp/ path")
    encoded = urllib.parse.unquote_to_bytes(raw_path[len(_PREFIX) :]).lstrip(b"/")
    compact = b"".join(encoded.split()).replace(b"-", b"+").replace(b"_", b"/")
    compact += b"=" * (-len(compact) % 4)
    try:
        decoded = base64.b64decode(compact, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64: {exc}") from exc
    if not decoded:
        raise ValueError("empty request")
    return decoded


def ocsp_routes(
    responder: OcspResponder, *, max_request_bytes: int, body_timeout_seconds: float
) -> APIRouter:
    router = APIRouter()

    @router.post("/ocsp", include_in_schema=False)
    @router.post("/ocsp/", include_in_schema=False)  # a responder URL written with a slash
    async def ocsp_post(request: Request) -> Response:
        content_type = request.headers.get("content-type")
        if content_type is not None and not _is_ocsp_request(content_type):
            return PlainTextResponse(
                f"OCSP requests are POSTed as Content-Type: {OCSP_REQUEST}\n", status_code=400
            )
        body = await _read_body(request, max_request_bytes, body_timeout_seconds)
        if body is None:
            return _malformed()
        return _ocsp(await responder.respond(body), request)

    # HEAD too: caches and monitors probe a GET URL with it.
    @router.api_route("/ocsp/{_encoded:path}", methods=["GET", "HEAD"], include_in_schema=False)
    @router.api_route("/ocsp", methods=["GET", "HEAD"], include_in_schema=False)
    async def ocsp_get(request: Request) -> Response:
        raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
        raw_path = raw_path.split(b"?", 1)[0]
        if len(raw_path) > max_request_bytes * 2:
            return _malformed()
        try:
            der = decode_get_request(raw_path)
        except ValueError:
            return _malformed()
        return _ocsp(await responder.respond(der), request)

    return router


def _is_ocsp_request(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == OCSP_REQUEST


async def _read_body(request: Request, limit: int, timeout: float) -> bytes | None:
    """The body, or None when it is empty, larger than ``limit`` or too slow
    (reading stops at the limit: an oversized body costs no memory)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    return None
    except TimeoutError:
        return None
    return bytes(body) or None


def _malformed() -> Response:
    return _ocsp(
        OcspAnswer(
            error_response(ResponseStatus.MALFORMED_REQUEST), ResponseStatus.MALFORMED_REQUEST
        )
    )


def _ocsp(answer: OcspAnswer, request: Request | None = None) -> Response:
    if answer.this_update is None or answer.next_update is None or answer.etag is None:
        # Errors and nonce answers: nobody may serve them to another client.
        return Response(
            answer.body, media_type=OCSP_RESPONSE, headers={"Cache-Control": "no-store"}
        )
    now = datetime.now(UTC)
    max_age = max(0, int((answer.next_update - now).total_seconds()))
    headers = {
        "Cache-Control": f"max-age={max_age}, public, no-transform, must-revalidate",
        "Last-Modified": _http_date(answer.this_update),
        "Expires": _http_date(answer.next_update),
        "ETag": answer.etag,
    }
    if (
        request is not None
        and request.method in ("GET", "HEAD")
        and answer.etag in _etags(request.headers.get("if-none-match", ""))
    ):
        return Response(status_code=304, headers=headers)
    return Response(answer.body, media_type=OCSP_RESPONSE, headers=headers)


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def _http_date(moment: datetime) -> str:
    return email.utils.format_datetime(moment.astimezone(UTC), usegmt=True)

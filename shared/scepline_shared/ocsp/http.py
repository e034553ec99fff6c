"""The OCSP HTTP binding (RFC 6960 appendix A, RFC 5019 5): ``POST /ocsp`` and
``GET /ocsp/<url-encoded base64 DER request>`` (and both for a responder URL
written ``<base>/ocsp/``: ``POST /ocsp/``, ``GET /ocsp//<request>``).

Served on the SCEP port by ingress and ``scepline up``, and alone by
``scepline ocsp``. Everything a client sends gets an OCSPResponse or a 4xx:
an unreadable request is answered malformedRequest (HTTP 200, what OpenSSL's
responder and most appliances expect), a POST with another content type 400,
another method 405. Answers without a nonce carry RFC 5019 caching headers, so
a CDN or reverse proxy in front can serve them; ``If-None-Match`` gets a 304.

:class:`OcspPaths` is ASGI middleware that answers ``/ocsp`` itself, in front of
the web framework's routing: an OCSP responder answers thousands of tiny,
mostly cached requests a second, and routing, request and response objects
cost more than finding the cached answer (docs/performance.md measured it).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import functools
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

from scepline_shared.ocsp.codec import ResponseStatus, error_response
from scepline_shared.ocsp.responder import OcspAnswer, OcspResponder

__all__ = ["OCSP_REQUEST", "OCSP_RESPONSE", "OcspHttp", "OcspPaths", "decode_get_request"]

OCSP_REQUEST = "application/ocsp-request"
OCSP_RESPONSE = "application/ocsp-response"
_PREFIX = b"/ocsp/"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]

_MALFORMED = OcspAnswer(
    error_response(ResponseStatus.MALFORMED_REQUEST), ResponseStatus.MALFORMED_REQUEST
)
_NOT_CACHED = (b"cache-control", b"no-store")
_CONTENT_TYPE = (b"content-type", OCSP_RESPONSE.encode())


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


def is_ocsp_path(path: str) -> bool:
    return path == "/ocsp" or path.startswith("/ocsp/")


class OcspHttp:
    """The ASGI app for ``/ocsp`` paths: reads the request (POST body or GET
    path), asks the responder, sends the answer with its caching headers."""

    def __init__(
        self, responder: OcspResponder, *, max_request_bytes: int, body_timeout_seconds: float
    ) -> None:
        self.responder = responder
        self._max_request_bytes = max_request_bytes
        self._body_timeout = body_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method == "POST":
            await self._post(scope, receive, send)
        elif method in ("GET", "HEAD"):
            await self._get(scope, send)
        else:
            allow = (b"allow", b"GET, HEAD, POST")
            await _plain(send, 405, "OCSP requests are sent by POST or GET\n", allow)

    async def _post(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _headers(scope)
        content_type = headers.get(b"content-type")
        if content_type is not None and not _is_ocsp_request(content_type):
            await _plain(send, 400, f"OCSP requests are POSTed as Content-Type: {OCSP_REQUEST}\n")
            return
        declared = headers.get(b"content-length")
        body = None
        if declared is None or (declared.isdigit() and int(declared) <= self._max_request_bytes):
            body = await self._read_body(receive)
        answer = _MALFORMED if body is None else await self.responder.respond(body)
        await _send_answer(send, answer, None)

    async def _get(self, scope: Scope, send: Send) -> None:
        raw_path = scope.get("raw_path") or scope["path"].encode()
        raw_path = raw_path.split(b"?", 1)[0]
        answer = _MALFORMED
        if len(raw_path) <= self._max_request_bytes * 2:
            try:
                der = decode_get_request(raw_path)
            except ValueError:
                pass
            else:
                answer = await self.responder.respond(der)
        if_none_match = _headers(scope).get(b"if-none-match")
        await _send_answer(send, answer, if_none_match, head=scope["method"] == "HEAD")

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The body, or None when it is empty, larger than the limit, too slow
        or the client left (reading stops at the limit: an oversized body costs
        no memory)."""
        body = b""
        try:
            async with asyncio.timeout(self._body_timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return None  # http.disconnect
                    body += message.get("body", b"")
                    if len(body) > self._max_request_bytes:
                        return None
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            return None
        return body or None


class OcspPaths:
    """ASGI middleware: ``/ocsp`` requests go to ``ocsp``, everything else to
    ``app`` (``app.add_middleware(OcspPaths, ocsp=...)``)."""

    def __init__(self, app: Asgi, ocsp: OcspHttp) -> None:
        self.app = app
        self.ocsp = ocsp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_ocsp_path(scope["path"]):
            await self.ocsp(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _headers(scope: Scope) -> dict[bytes, bytes]:
    # ASGI header names are lower-case already.
    return dict(scope["headers"])


def _is_ocsp_request(content_type: bytes) -> bool:
    return content_type.split(b";", 1)[0].strip().lower() == OCSP_REQUEST.encode()


async def _send_answer(
    send: Send, answer: OcspAnswer, if_none_match: bytes | None, *, head: bool = False
) -> None:
    body = answer.body
    if answer.this_update is None or answer.next_update is None or answer.etag is None:
        # Errors and nonce answers: nobody may serve them to another client.
        headers = [_CONTENT_TYPE, _NOT_CACHED]
        status = 200
    else:
        max_age = max(0, int((answer.next_update - datetime.now(UTC)).total_seconds()))
        etag = answer.etag.encode()
        headers = [
            (
                b"cache-control",
                b"max-age=%d, public, no-transform, must-revalidate" % max_age,
            ),
            (b"last-modified", _http_date(answer.this_update)),
            (b"expires", _http_date(answer.next_update)),
            (b"etag", etag),
        ]
        status = 200
        if if_none_match is not None and etag in _etags(if_none_match):
            status, body = 304, b""
        else:
            headers.append(_CONTENT_TYPE)
    if status == 200:  # a 304 names no length: it has no body, whatever the 200 had
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _plain(send: Send, status: int, text: str, *extra: tuple[bytes, bytes]) -> None:
    body = text.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _etags(header: bytes) -> set[bytes]:
    return {tag.strip().removeprefix(b"W/") for tag in header.split(b",") if tag.strip()}


@functools.lru_cache(maxsize=4096)  # an answer's two dates, formatted once, not per request
def _http_date(moment: datetime) -> bytes:
    return email.utils.format_datetime(moment.astimezone(UTC), usegmt=True).encode()

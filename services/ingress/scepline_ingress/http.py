"""The SCEP HTTP binding (RFC 8894 §4) and the CRL distribution point: what
the public SCEP port serves, and nothing else (metrics and the like are on the
health port, ``scepline_shared.health``; ``/healthz`` and ``/readyz`` are here
too, for load balancers).

Only HTTP concerns live here: routing, decoding the GET message from the raw
query string, the body size and time limits and content types.

SCEP endpoints (docs/endpoints.md): ``/scep`` is the default endpoint,
``/scep/<name>`` each endpoint of the configuration file, each also with
``/pkiclient.exe`` or ``/cgi-bin/pkiclient.exe`` appended
(``scepline_shared.endpoints.Endpoints.resolve``); a path under ``/scep/`` that
names no endpoint is 404.

CA certificates: ``GET /ca/<issuer_key_id>.crt`` (DER, the caIssuers URL in
issued certificates' Authority Information Access).

OCSP: ``POST /ocsp`` and ``GET /ocsp/<request>`` (``scepline_shared.ocsp.http``).

CRLs: ``GET /crl/<issuer_key_id>.crl`` (the CA's spki_sha256_hex, the URL the
signer writes into issued certificates' CRL distribution points) and
``GET /crl`` for the active CA, as DER ``application/pkix-crl``.

``GET /`` is a small page for the administrator who opens the service's
address: the SCEP URL to paste into an Intune SCEP profile, and links to the CA
certificates and the CRL.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import email.utils
import html
import re
import urllib.parse
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from scepline_shared.endpoints import Endpoints
from scepline_shared.health import ReadinessCheck, health_routes
from scepline_shared.log import get_logger
from scepline_shared.metrics import ENDPOINT_REQUESTS, SCEP_REQUESTS
from scepline_shared.ocsp.http import OcspHttp, OcspPaths
from scepline_shared.store.models import DEFAULT_ENDPOINT

from .errors_to_response import pki_response, response_for_error, unavailable
from .limits import Throttled
from .service import ScepService

__all__ = ["PKIX_CRL", "create_app", "decode_get_message", "is_scep_path"]

log = get_logger(__name__)

PKIX_CRL = "application/pkix-crl"
PKIX_CERT = "application/pkix-cert"

_SCEP_ROOT = "scep"
_WINDOWS_SUFFIX = "pkiclient.exe"
# <spki_sha256_hex>.crl; upper-case hex is accepted and folded.
_CRL_FILE = re.compile(r"([0-9a-fA-F]{64})\.crl")
_CA_FILE = re.compile(r"([0-9a-fA-F]{64})\.(?:crt|cer|der)")


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
    body_timeout_seconds: float,
    readiness: ReadinessCheck | None = None,
    lifespan: Callable[[FastAPI], object] | None = None,
    public_base_url: str | None = None,
    ocsp: OcspHttp | None = None,
    endpoints: Endpoints | None = None,
) -> FastAPI:
    """``public_base_url`` (SCEPLINE_PUBLIC_BASE_URL) is the address ``GET /``
    names; unset, the page names the address it was asked at. ``ocsp``: the
    OCSP responder (``scepline_shared.ocsp.http``), answering /ocsp here too.
    ``endpoints``: the SCEP endpoints and their paths (None: the default one
    alone, at /scep and any path ending in pkiclient.exe)."""
    paths = _endpoint_paths(endpoints)
    app = FastAPI(
        title="scepline",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,  # type: ignore[arg-type]
    )
    app.include_router(health_routes(readiness))
    if ocsp is not None:
        app.add_middleware(OcspPaths, ocsp=ocsp)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index(request: Request) -> Response:
        base = (public_base_url or str(request.base_url)).rstrip("/")
        if "text/html" in request.headers.get("accept", ""):
            return HTMLResponse(_index_html(base, paths))
        return PlainTextResponse(_index_text(base, paths))

    @app.api_route("/crl", methods=["GET", "HEAD"], include_in_schema=False)
    async def active_crl() -> Response:
        return await _crl_response(service, None)

    @app.api_route("/crl/{filename}", methods=["GET", "HEAD"], include_in_schema=False)
    async def crl(filename: str) -> Response:
        match = _CRL_FILE.fullmatch(filename)
        if match is None:
            return PlainTextResponse(
                "expected /crl/<64 hex digits: SHA-256 of the CA public key>.crl\n",
                status_code=400,
            )
        return await _crl_response(service, match.group(1).lower())

    @app.api_route("/ca/{filename}", methods=["GET", "HEAD"], include_in_schema=False)
    async def ca_certificate(filename: str) -> Response:
        # The caIssuers URL of issued certificates' AIA: one DER certificate.
        match = _CA_FILE.fullmatch(filename)
        found = None if match is None else service.ca_certificate(match.group(1).lower())
        if found is None:
            return PlainTextResponse(
                "expected /ca/<64 hex digits: SHA-256 of a CA public key of ours>.crt\n",
                status_code=404,
            )
        return Response(found, media_type=PKIX_CERT)

    @app.api_route("/{path:path}", methods=["GET", "POST"], include_in_schema=False)
    async def scep(path: str, request: Request) -> Response:
        endpoint = _endpoint_at(path, endpoints)
        if endpoint is None:
            return _not_found(path, paths)
        parameters = query_parameters(request.scope.get("query_string", b""))
        operation = parameters.get("operation", b"").decode("latin-1")

        def count(what: str, outcome: str) -> None:
            SCEP_REQUESTS.labels(what, "", outcome).inc()
            ENDPOINT_REQUESTS.labels(endpoint, what, outcome).inc()

        if operation == "GetCACaps":
            count(operation, "ok")
            return PlainTextResponse("\n".join(service.capabilities(endpoint)) + "\n")
        if operation == "GetCACert":
            count(operation, "ok")
            return Response(
                service.ca_certificates(endpoint), media_type="application/x-x509-ca-ra-cert"
            )
        if operation == "GetNextCACert":
            body = service.next_ca_certificate(endpoint)
            if body is None:
                count(operation, "none")
                return PlainTextResponse("no next CA certificate is staged\n", status_code=404)
            count(operation, "ok")
            return Response(body, media_type="application/x-x509-next-ca-cert")
        if operation != "PKIOperation":
            count("unknown", "bad_operation")
            return PlainTextResponse("unknown or missing operation\n", status_code=400)
        message = await _read_message(request, parameters, max_body_bytes, body_timeout_seconds)
        if isinstance(message, Response):
            return message
        try:
            reply = await service.pki_operation(message, endpoint)
        except Throttled as throttled:
            count("PKIOperation", "throttled")
            return PlainTextResponse(
                f"{throttled}\n",
                status_code=503,
                headers={"Retry-After": str(round(throttled.retry_after))},
            )
        except Exception as error:  # noqa: BLE001 - the mapper decides what the client sees
            return response_for_error(error, endpoint)
        return pki_response(reply, endpoint)

    return app


def _endpoint_at(path: str, endpoints: Endpoints | None) -> str | None:
    if endpoints is None:
        return DEFAULT_ENDPOINT if is_scep_path(path) else None
    return endpoints.resolve(path)


def _endpoint_paths(endpoints: Endpoints | None) -> list[tuple[str, str]]:
    """(endpoint, its first path) of every endpoint, the default one first."""
    if endpoints is None:
        return [(DEFAULT_ENDPOINT, "/scep")]
    listed = [(e.name, e.paths[0]) for e in endpoints if e.paths]
    return sorted(listed, key=lambda entry: (entry[1] != "/scep", entry[1]))


def _not_found(path: str, paths: list[tuple[str, str]]) -> Response:
    if ("/" + path.strip("/")).startswith("/scep/"):
        served = ", ".join(where for _, where in paths)
        return PlainTextResponse(
            f"no SCEP endpoint at /{path.strip('/')}; SCEP endpoints: {served}\n",
            status_code=404,
        )
    return PlainTextResponse("not found\n", status_code=404)


def _index_entries(base: str, paths: list[tuple[str, str]]) -> list[tuple[str, str, bool]]:
    """(what, URL, whether to link it) for the index page."""
    entries: list[tuple[str, str, bool]] = []
    for name, path in paths:
        which = "" if len(paths) == 1 else f" of endpoint {name}"
        entries.append(
            (
                f"SCEP URL{which} (Intune SCEP certificate profile: SCEP Server URLs)",
                base + path,
                False,
            )
        )
    first = base + (paths[0][1] if paths else "/scep")
    return [
        *entries,
        (
            "CA certificates (GetCACert: the RA and CA certificates, PKCS#7)",
            f"{first}?operation=GetCACert",
            True,
        ),
        ("CA capabilities (GetCACaps)", f"{first}?operation=GetCACaps", True),
        ("CRL of the active CA (DER)", f"{base}/crl", True),
    ]


_INDEX_NOTE = (
    "Windows devices append /pkiclient.exe to the SCEP URL; it is served too. "
    "Intune's trusted certificate profile takes the CA certificate alone: ca/ca.crt "
    "in the server's data directory (`scepline ca show` prints its fingerprint)."
)


def _index_text(base: str, paths: list[tuple[str, str]]) -> str:
    lines = ["scepline: SCEP (RFC 8894) certificate enrolment", ""]
    lines += [f"{what}:\n  {url}" for what, url, _ in _index_entries(base, paths)]
    return "\n".join([*lines, "", _INDEX_NOTE, ""])


def _index_html(base: str, paths: list[tuple[str, str]]) -> str:
    # The base may come from the request's Host header: everything is escaped.
    items = "".join(
        f"<dt>{html.escape(what)}</dt><dd>"
        + (
            f'<a href="{html.escape(url)}">{html.escape(url)}</a>'
            if link
            else f"<code>{html.escape(url)}</code>"
        )
        + "</dd>"
        for what, url, link in _index_entries(base, paths)
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>scepline</title></head><body>"
        "<h1>scepline: SCEP (RFC 8894) certificate enrolment</h1>"
        f"<dl>{items}</dl><p>{html.escape(_INDEX_NOTE)}</p></body></html>\n"
    )


async def _crl_response(service: ScepService, issuer_key_id: str | None) -> Response:
    try:
        crl = await service.latest_crl(issuer_key_id)
    except Exception:  # a store outage: the client retries
        log.exception("could not read the CRL", issuer_key_id=issuer_key_id)
        return unavailable()
    if crl is None:
        return PlainTextResponse("no CRL is published for this CA\n", status_code=404)
    return Response(
        crl.der,
        media_type=PKIX_CRL,
        headers={"Last-Modified": _http_date(crl.this_update)},
    )


def _http_date(moment: dt.datetime) -> str:
    return email.utils.format_datetime(moment.astimezone(dt.UTC), usegmt=True)


async def _read_message(
    request: Request, parameters: dict[str, bytes], max_body_bytes: int, timeout: float
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
        try:
            async with asyncio.timeout(timeout):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > max_body_bytes:
                        return _too_large()
        except TimeoutError:
            return _too_slow()
        message = bytes(body)
    if not message:
        return _bad_request("empty PKIOperation message")
    if len(message) > max_body_bytes:
        return _too_large()
    return message


def _too_large() -> Response:
    SCEP_REQUESTS.labels("PKIOperation", "unknown", "too_large").inc()
    return PlainTextResponse("PKIOperation message too large\n", status_code=413)


def _too_slow() -> Response:
    SCEP_REQUESTS.labels("PKIOperation", "unknown", "too_slow").inc()
    # Close: the rest of the body may still be on its way.
    return PlainTextResponse(
        "PKIOperation message not received in time\n",
        status_code=408,
        headers={"Connection": "close"},
    )


def _bad_request(reason: str) -> Response:
    SCEP_REQUESTS.labels("PKIOperation", "unknown", "malformed").inc()
    return PlainTextResponse(f"{reason}\n", status_code=400)

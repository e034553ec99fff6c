"""The OCSP HTTP binding in process: GET paths as clients write them, HEAD,
and the caching headers of an answer."""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from cryptography.x509 import ocsp
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from scepline_shared.ocsp.http import OcspHttp, OcspPaths, decode_get_request
from scepline_shared.ocsp.responder import OcspResponder, ocsp_issuer
from scepline_shared.store import RequestRepository
from tests.shared.ocsp.pki import make_ca, make_leaf, make_responder, ocsp_request, store

CA = make_ca()
RESPONDER = make_responder(CA)
REQUEST = ocsp_request(make_leaf(CA), CA.certificate)


@pytest.mark.parametrize(
    "path",
    [
        "/ocsp/" + urllib.parse.quote(base64.b64encode(REQUEST).decode(), safe=""),
        "/ocsp/" + base64.b64encode(REQUEST).decode(),
        "/ocsp/" + base64.urlsafe_b64encode(REQUEST).decode().rstrip("="),
        "/ocsp//" + base64.b64encode(REQUEST).decode(),
    ],
)
def test_a_get_path_is_read_however_the_client_encoded_it(path: str) -> None:
    assert decode_get_request(path.encode()) == REQUEST


@pytest.mark.parametrize("path", [b"/ocsp/", b"/ocsp/%%%", b"/ocsp/a", b"/elsewhere/AAAA"])
def test_a_get_path_without_a_request_is_refused(path: bytes) -> None:
    with pytest.raises(ValueError):
        decode_get_request(path)


@pytest.fixture
async def client(repository: RequestRepository) -> AsyncIterator[httpx.AsyncClient]:
    issuer = ocsp_issuer(
        CA.certificate,
        responder=RESPONDER,
        ca_key=None,
        signing="delegated",
        our_ca_certificates=[],
    )
    responder = OcspResponder(
        repository,
        lambda: [issuer],
        check_interval=timedelta(seconds=60),
        response_validity=timedelta(hours=1),
    )
    app = FastAPI()

    @app.get("/{path:path}")
    async def elsewhere() -> PlainTextResponse:
        return PlainTextResponse("the app")

    app.add_middleware(
        OcspPaths, ocsp=OcspHttp(responder, max_request_bytes=8192, body_timeout_seconds=5)
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ocsp") as http:
        yield http


async def test_head_answers_with_the_get_headers_and_no_body(
    client: httpx.AsyncClient, repository: RequestRepository
) -> None:
    leaf = make_leaf(CA)
    await store(repository, leaf, CA)
    path = "/ocsp/" + urllib.parse.quote(
        base64.b64encode(ocsp_request(leaf, CA.certificate)).decode(), safe=""
    )
    got = await client.get(path)
    head = await client.head(path)

    assert ocsp.load_der_ocsp_response(got.content).certificate_status.name == "GOOD"
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == got.headers["etag"]
    assert "max-age=" in head.headers["cache-control"]
    revalidated = await client.get(path, headers={"If-None-Match": got.headers["etag"]})
    assert revalidated.status_code == 304


async def test_another_method_gets_405_naming_the_ones_allowed(client: httpx.AsyncClient) -> None:
    answer = await client.put("/ocsp", content=REQUEST)

    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET, HEAD, POST"


async def test_paths_outside_ocsp_go_on_to_the_app(client: httpx.AsyncClient) -> None:
    assert (await client.get("/elsewhere")).text == "the app"
    assert (await client.get("/ocspx")).text == "the app"


async def test_a_304_carries_the_caching_headers_and_no_length(
    client: httpx.AsyncClient, repository: RequestRepository
) -> None:
    leaf = make_leaf(CA)
    await store(repository, leaf, CA)
    request = ocsp_request(leaf, CA.certificate)
    path = "/ocsp/" + urllib.parse.quote(base64.b64encode(request).decode(), safe="")
    got = await client.get(path)

    revalidated = await client.get(path, headers={"If-None-Match": f"W/{got.headers['etag']}"})

    assert revalidated.status_code == 304
    assert revalidated.headers["last-modified"] == got.headers["last-modified"]
    assert "content-length" not in revalidated.headers

"""The SCEP HTTP binding: operations, paths, GET encodings and limits."""

from __future__ import annotations

import base64
import html
import re
import urllib.parse

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from scepline_ingress.http import PKIX_CRL, decode_get_message, is_scep_path
from scepline_shared.scep import (
    ContentEncryption,
    Digest,
    MessageType,
    PkiStatus,
    build_request,
    parse_degenerate,
    read_cert_rep,
)
from scepline_shared.settings import Settings
from tests.fixtures.scepline import CHALLENGE, RunningScepline, running
from tests.support.pki import csr_for, requester


@pytest.mark.parametrize(
    "path",
    [
        "scep",
        "/scep",
        "cgi-bin/pkiclient.exe",
        "scep/pkiclient.exe",
        "certsrv/mscep/mscep.dll/pkiclient.exe",
    ],
)
def test_scep_is_served_at_scep_and_any_path_ending_in_pkiclient_exe(path: str):
    assert is_scep_path(path)


@pytest.mark.parametrize("path", ["", "scepx", "admin", "pkiclient.exe.bak"])
def test_other_paths_are_not_scep(path: str):
    assert not is_scep_path(path)


def test_get_message_decoding_tolerates_what_clients_send():
    der = bytes(range(256)) * 3
    standard = base64.b64encode(der)
    assert decode_get_message(standard) == der
    # strongSwan/sscep: line breaks every 64 characters.
    wrapped = b"\n".join(standard[i : i + 64] for i in range(0, len(standard), 64))
    assert decode_get_message(wrapped) == der
    # No padding, and the url-safe alphabet.
    assert decode_get_message(base64.urlsafe_b64encode(der).rstrip(b"=")) == der


async def test_get_ca_caps_lists_what_is_supported(scepline: RunningScepline):
    response = await scepline.http.get("/scep", params={"operation": "GetCACaps"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    caps = response.text.split()
    for keyword in [
        "POSTPKIOperation",
        "SCEPStandard",
        "AES",
        "DES3",
        "SHA-1",
        "SHA-256",
        "SHA-512",
        "Renewal",
    ]:
        assert keyword in caps
    assert "GetNextCACert" not in caps  # no next CA is staged


async def test_get_ca_cert_returns_ra_and_ca_as_degenerate_pkcs7(scepline: RunningScepline):
    response = await scepline.http.get(
        "/cgi-bin/pkiclient.exe", params={"operation": "GetCACert", "message": "0"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-x509-ca-ra-cert"
    certificates, _ = parse_degenerate(response.content)
    material = scepline.embedded.material
    assert certificates == [material.ra.certificate, material.ca.certificate]


async def test_get_next_ca_cert_without_a_staged_ca_is_404(scepline: RunningScepline):
    response = await scepline.http.get("/scep", params={"operation": "GetNextCACert"})
    assert response.status_code == 404


@pytest.mark.parametrize("query", ["", "?operation=Bogus", "?operation="])
async def test_unknown_or_missing_operation_is_400(scepline: RunningScepline, query: str):
    response = await scepline.http.get(f"/scep{query}")
    assert response.status_code == 400


async def test_unknown_path_is_404(scepline: RunningScepline):
    response = await scepline.http.get("/nope", params={"operation": "GetCACaps"})
    assert response.status_code == 404


async def test_health_and_readiness_on_the_scep_port_metrics_on_the_health_port(
    scepline: RunningScepline,
):
    assert (await scepline.http.get("/healthz")).status_code == 200
    assert (await scepline.http.get("/readyz")).status_code == 200
    for path in ["/metrics", "/openapi.json", "/docs", "/redoc"]:
        assert (await scepline.http.get(path)).status_code == 404, path
    assert (await scepline.health.get("/healthz")).status_code == 200
    assert (await scepline.health.get("/readyz")).status_code == 200
    await scepline.http.get("/scep", params={"operation": "GetCACaps"})
    metrics = (await scepline.health.get("/metrics")).text
    assert 'scepline_scep_requests_total{message_type="",operation="GetCACaps",outcome="ok"}' in (
        metrics
    )
    # Ingress reads the queue depths from its broker (nothing waits in this one).
    assert 'scepline_queue_messages{queue="dlq",step="sign"} 0.0' in metrics


async def _signed_request(scepline: RunningScepline, cn: str) -> tuple[bytes, bytes]:
    await scepline.client.get_ca_certs()
    client = requester(cn)
    nonce = b"N" * 16
    der = build_request(
        message_type=MessageType.PKCS_REQ,
        transaction_id=f"tx-{cn}",
        message_data=csr_for(client, cn, CHALLENGE).public_bytes(Encoding.DER),
        signer_key=client.key,
        signer_certificate=client.certificate,
        recipient=scepline.client.ra_certificate,
        encryption=ContentEncryption.AES128_CBC,
        digest=Digest.SHA256,
        sender_nonce=nonce,
    )
    return der, nonce


@pytest.mark.parametrize("style", ["percent-encoded", "macos-raw-plus-slash", "line-wrapped"])
async def test_pki_operation_over_get_in_every_encoding_clients_use(
    scepline: RunningScepline, style: str
):
    der, nonce = await _signed_request(scepline, f"get-{style}")
    encoded = base64.b64encode(der).decode()
    if style == "percent-encoded":
        message = urllib.parse.quote(encoded, safe="")
    elif style == "macos-raw-plus-slash":
        message = encoded.replace("=", "%3D")  # '+' and '/' sent raw
        assert "+" in message or "/" in message
    else:
        message = "%0A".join(encoded[i : i + 64] for i in range(0, len(encoded), 64))
    response = await scepline.http.get(f"/scep?operation=PKIOperation&message={message}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-pki-message"
    client = requester(f"get-{style}")
    rep = read_cert_rep(
        response.content,
        expected_signer=scepline.client.ra_certificate,
        sender_nonce=nonce,
        client_key=client.key,
        client_certificate=client.certificate,
    )
    assert rep.status is PkiStatus.SUCCESS


async def test_oversized_post_is_413(scepline: RunningScepline):
    body = b"\x30" * (scepline.settings.http_max_body_bytes + 1)
    response = await scepline.http.post("/scep?operation=PKIOperation", content=body)
    assert response.status_code == 413


async def test_oversized_get_is_413(scepline_settings: Settings):
    small = scepline_settings.model_copy(update={"http_max_body_bytes": 4096})
    async with running(small) as product:
        message = "A" * (4096 * 2 + 4)
        response = await product.http.get(f"/scep?operation=PKIOperation&message={message}")
    assert response.status_code == 413


@pytest.mark.parametrize(
    "body",
    [b"", b"garbage", b"\x30\x03\x02\x01\x01", b"\x30\x80" + b"\x00" * 10, bytes(range(256))],
    ids=["empty", "text", "not-cms", "truncated-ber", "noise"],
)
async def test_unreadable_post_body_is_400_not_5xx(scepline: RunningScepline, body: bytes):
    response = await scepline.http.post("/scep?operation=PKIOperation", content=body)
    assert response.status_code == 400
    assert "Traceback" not in response.text


async def test_get_message_that_is_not_base64_is_400(scepline: RunningScepline):
    response = await scepline.http.get("/scep?operation=PKIOperation&message=%%%%")
    assert response.status_code == 400


async def test_the_root_page_names_the_scep_url_and_links_what_an_admin_downloads(
    scepline: RunningScepline,
):
    page = await scepline.http.get("/", headers={"Accept": "text/html,*/*"})

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<code>http://scepline/scep</code>" in page.text
    links = re.findall(r'href="([^"]+)"', page.text)
    assert [urllib.parse.unquote(link) for link in links] == [
        "http://scepline/scep?operation=GetCACert",
        "http://scepline/scep?operation=GetCACaps",
        "http://scepline/crl",
    ]
    downloads = [await scepline.http.get(html.unescape(link)) for link in links]
    assert [d.status_code for d in downloads] == [200, 200, 200]
    assert downloads[0].headers["content-type"] == "application/x-x509-ca-ra-cert"
    assert downloads[2].headers["content-type"] == PKIX_CRL


async def test_the_root_page_is_text_for_a_terminal(scepline: RunningScepline):
    page = await scepline.http.get("/")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain")
    assert "  http://scepline/scep\n" in page.text
    assert "  http://scepline/scep?operation=GetCACert\n" in page.text
    assert "  http://scepline/crl\n" in page.text


async def test_the_root_page_names_the_public_address_when_one_is_set(
    scepline_settings: Settings,
):
    public = scepline_settings.model_copy(update={"public_base_url": "https://scep.example.com"})
    async with running(public) as product:
        page = await product.http.get("/")

    assert "  https://scep.example.com/scep\n" in page.text


async def test_the_root_page_escapes_what_it_shows(scepline_settings: Settings):
    odd = scepline_settings.model_copy(update={"public_base_url": 'https://x/"><b>&'})
    async with running(odd) as product:
        page = await product.http.get("/", headers={"Accept": "text/html"})

    assert "<b>" not in page.text
    assert "<code>https://x/&quot;&gt;&lt;b&gt;&amp;/scep</code>" in page.text

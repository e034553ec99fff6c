"""The CRL distribution point: GET /crl/<issuer_key_id>.crl and GET /crl."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from scepline_shared.ca import build_crl
from scepline_shared.keys import KeyPair, spki_sha256_hex
from tests.fixtures.scepline import RunningScepline
from tests.services.ingress.support import ingress_beside, product_identity
from tests.support.pki import rsa_key, self_signed


async def publish(
    scepline: RunningScepline, ca: KeyPair, number: int
) -> x509.CertificateRevocationList:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    crl = build_crl(
        ca=ca, revoked=[], number=number, this_update=now, next_update=now + dt.timedelta(days=1)
    )
    await scepline.embedded.repository.store_crl(
        number=number,
        issuer_key_id=spki_sha256_hex(ca.certificate.public_key()),
        this_update=now,
        next_update=now + dt.timedelta(days=1),
        der=crl.public_bytes(Encoding.DER),
    )
    return crl


def key_id(scepline: RunningScepline) -> str:
    return spki_sha256_hex(scepline.embedded.material.ca.certificate.public_key())


async def latest_number(scepline: RunningScepline) -> int:
    latest = await scepline.embedded.repository.latest_crl(key_id(scepline))
    return 0 if latest is None else latest.number


async def test_the_crl_the_signer_published_at_start_is_served(scepline: RunningScepline):
    published = await scepline.embedded.repository.latest_crl(key_id(scepline))
    assert published is not None
    response = await scepline.http.get("/crl")
    assert response.status_code == 200
    assert response.content == published.der


async def test_the_latest_crl_is_served_as_der(scepline: RunningScepline):
    ca = scepline.embedded.material.ca
    number = await latest_number(scepline)
    await publish(scepline, ca, number + 1)
    latest = await publish(scepline, ca, number + 2)
    for path in ("/crl", f"/crl/{key_id(scepline)}.crl", f"/crl/{key_id(scepline).upper()}.crl"):
        response = await scepline.http.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"] == "application/pkix-crl"
        assert response.content == latest.public_bytes(Encoding.DER)
        crl = x509.load_der_x509_crl(response.content)
        assert crl.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]
        assert response.headers["last-modified"].endswith("GMT")


async def test_a_previous_ca_crl_is_served_by_its_key_id(scepline: RunningScepline):
    old_key = rsa_key("crl-previous-ca")
    old = KeyPair(old_key, self_signed(old_key, "previous CA"))
    crl = await publish(scepline, old, 10)
    response = await scepline.http.get(f"/crl/{spki_sha256_hex(old_key.public_key())}.crl")
    assert response.status_code == 200
    assert response.content == crl.public_bytes(Encoding.DER)
    active = await scepline.http.get("/crl")  # the active CA's own, not the newest in the store
    assert active.content != crl.public_bytes(Encoding.DER)


async def test_an_unknown_ca_is_404(scepline: RunningScepline):
    assert (await scepline.http.get(f"/crl/{'0' * 64}.crl")).status_code == 404


@pytest.mark.parametrize(
    "filename",
    [
        "abc.crl",
        "0" * 63 + ".crl",
        "0" * 65 + ".crl",
        "g" * 64 + ".crl",
        "0" * 64,
        "0" * 64 + ".pem",
        "0" * 64 + ".crl.crl",
        "%00.crl",
        "%F0%9F%92%A9.crl",
    ],
)
async def test_a_malformed_name_is_400(scepline: RunningScepline, filename: str):
    response = await scepline.http.get(f"/crl/{filename}")
    assert response.status_code == 400
    assert "Traceback" not in response.text


async def test_a_store_outage_is_503_with_retry_after(
    scepline: RunningScepline, monkeypatch: pytest.MonkeyPatch
):
    async def broken(issuer_key_id: str) -> None:
        raise ConnectionError("database is down")

    async with ingress_beside(scepline, product_identity(scepline)) as ingress:
        monkeypatch.setattr(scepline.embedded.repository, "latest_crl", broken)
        response = await ingress.http.get(f"/crl/{key_id(scepline)}.crl")
    assert response.status_code == 503
    assert response.headers["retry-after"]


@pytest.mark.parametrize("path", ["/crl/..%2F..%2Fetc%2Fpasswd", "/crl/a/b.crl", "/crl/"])
async def test_other_paths_under_crl_are_4xx(scepline: RunningScepline, path: str):
    response = await scepline.http.get(path)
    assert 400 <= response.status_code < 500

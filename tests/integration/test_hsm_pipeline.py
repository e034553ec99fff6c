"""The whole pipeline with the CA and RA keys in a SoftHSM2 token, on both
deployments: `scepline up`'s in-process broker with SQLite, and RabbitMQ with
PostgreSQL. Certificates and CRLs come out of the token and verify with OpenSSL;
the keys never leave it."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from scepline_devtools.scep_client import build_csr
from scepline_shared.keys import spki_sha256_hex
from scepline_shared.keys.pkcs11 import Pkcs11Config, Pkcs11PrivateKey, TokenUnavailable
from scepline_shared.scep import PkiStatus
from scepline_shared.settings import Settings
from tests.fixtures.scepline import CHALLENGE, DEPLOYMENTS, RunningScepline, deployment, running
from tests.support.pki import name, requester

BASE_URL = "http://scepline"


@pytest.fixture(params=DEPLOYMENTS)
async def hsm_settings(
    request: pytest.FixtureRequest, tmp_path: Path, softhsm_config: Pkcs11Config
) -> AsyncIterator[Settings]:
    """A fresh CA whose keys `scepline up` generates in the session's token
    (one token per pytest run, so every test gets labels of its own)."""
    labels = uuid.uuid4().hex[:10]
    async with deployment(
        request.param,
        request,
        data_dir=tmp_path / "var",
        static_challenge=CHALLENGE,
        sync_wait_seconds=10,
        key_backend="pkcs11",
        pkcs11_module=softhsm_config.module,
        pkcs11_token_label=softhsm_config.token_label,
        pkcs11_pin=softhsm_config.pin,
        pkcs11_ca_key_label=f"ca-{labels}",
        pkcs11_ra_key_label=f"ra-{labels}",
        ca_key_size=2048,
        public_base_url=BASE_URL,
        crl_check_interval_seconds=0.2,
    ) as settings:
        yield settings


async def enrol(product: RunningScepline, label: str) -> x509.Certificate:
    who = requester(label)
    csr = build_csr(who.key, name(label), challenge=CHALLENGE)
    rep = await product.client.enrol(csr, who, transaction_id=f"tx-{label}")
    assert rep.status is PkiStatus.SUCCESS, rep
    return rep.certificates[0]


def openssl_verify(tmp_path: Path, ca: x509.Certificate, leaf: x509.Certificate, *crl_args: str):  # type: ignore[no-untyped-def]
    ca_pem, leaf_pem = tmp_path / "ca.pem", tmp_path / "leaf.pem"
    ca_pem.write_bytes(ca.public_bytes(Encoding.PEM))
    leaf_pem.write_bytes(leaf.public_bytes(Encoding.PEM))
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca_pem), *crl_args, str(leaf_pem)],
        capture_output=True,
        text=True,
        check=False,
    )


def distribution_point(certificate: x509.Certificate) -> str:
    points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    [point] = list(points)
    [uri] = point.full_name or []
    return str(uri.value)


async def test_a_device_enrols_with_keys_that_live_in_the_token(
    hsm_settings: Settings, tmp_path: Path
):
    async with running(hsm_settings) as product:
        material = product.embedded.material
        assert isinstance(material.ca.key, Pkcs11PrivateKey)
        assert isinstance(material.ra.key, Pkcs11PrivateKey)  # ingress decrypts in the token
        certificate = await enrol(product, "hsm-device")
        verified = openssl_verify(tmp_path, material.ca.certificate, certificate)
        assert verified.returncode == 0, verified.stderr
        ca_id = spki_sha256_hex(material.ca.certificate.public_key())
        assert distribution_point(certificate) == f"{BASE_URL}/crl/{ca_id}.crl"
    ca_dir = hsm_settings.data_dir / "ca"
    assert not (ca_dir / "ca.key").exists() and not (ca_dir / "ra.key").exists()
    assert hsm_settings.pkcs11_ca_key_label in (ca_dir / "keys.json").read_text()


async def test_a_revoked_certificate_is_on_the_crl_the_distribution_point_serves(
    hsm_settings: Settings, tmp_path: Path
):
    async with running(hsm_settings) as product:
        ca = product.embedded.material.ca.certificate
        certificate = await enrol(product, "hsm-revoked")
        kept = await enrol(product, "hsm-kept")
        await product.embedded.repository.revoke(certificate.serial_number, reason=1)
        path = distribution_point(certificate).removeprefix(BASE_URL)
        crl = None
        for _ in range(100):  # the signer's publisher checks every 0.2 s
            response = await product.http.get(path)
            assert response.status_code == 200
            crl = x509.load_der_x509_crl(response.content)
            if crl.get_revoked_certificate_by_serial_number(certificate.serial_number):
                break
            await asyncio.sleep(0.1)
        assert crl is not None
        assert crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None
        assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]

    crl_pem = tmp_path / "crl.pem"
    crl_pem.write_bytes(crl.public_bytes(Encoding.PEM))
    checked = ("-crl_check", "-CRLfile", str(crl_pem))
    revoked = openssl_verify(tmp_path, ca, certificate, *checked)
    assert revoked.returncode != 0 and "certificate revoked" in revoked.stdout + revoked.stderr
    still_good = openssl_verify(tmp_path, ca, kept, *checked)
    assert still_good.returncode == 0, still_good.stderr


async def test_an_ecdsa_ca_in_the_token_gets_an_rsa_ra(hsm_settings: Settings, tmp_path: Path):
    ec_ca = hsm_settings.model_copy(update={"ca_key_type": "ec", "ca_key_size": 256})
    async with running(ec_ca) as product:
        material = product.embedded.material
        assert isinstance(material.ca.certificate.public_key(), ec.EllipticCurvePublicKey)
        assert isinstance(material.ra.certificate.public_key(), rsa.RSAPublicKey)
        certificate = await enrol(product, "hsm-ec-ca")
        assert certificate.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256
        verified = openssl_verify(tmp_path, material.ca.certificate, certificate)
        assert verified.returncode == 0, verified.stderr
        certificate.verify_directly_issued_by(material.ca.certificate)


async def test_readiness_reports_an_unreachable_token(
    hsm_settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    """A process whose HSM does not answer takes no traffic (and no messages)."""
    async with running(hsm_settings) as product:
        assert (await product.http.get("/readyz")).status_code == 200
        token = product.embedded.material.ca.key.token  # type: ignore[attr-defined]

        async def unreachable(operation: object) -> None:
            raise TokenUnavailable("the HSM does not answer")

        monkeypatch.setattr(token, "run_async", unreachable)
        assert (await product.http.get("/readyz")).status_code == 503
        monkeypatch.undo()
        assert (await product.http.get("/readyz")).status_code == 200

"""Named CAs (docs/endpoints.md, ``[cas.NAME]``): an endpoint whose ``ca`` is a
CA of its own is served that CA's certificates, issues under its key, publishes
its CRL and answers its OCSP, renews only its certificates; the default CA goes
on beside it, on both deployments."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from scepline.journal import print_journal
from scepline_devtools.scep_client import Requester, ScepClient, build_csr
from scepline_shared.keys import spki_sha256_hex
from scepline_shared.keys.pkcs11 import Pkcs11Config, Pkcs11PrivateKey
from scepline_shared.scep import PkiStatus
from scepline_shared.settings import Settings
from tests.fixtures.scepline import DEPLOYMENTS, RunningScepline, lab_deployment, running
from tests.support.pki import name, requester, rsa_key

CONFIG = """
[cas.corp]
common_name = "Corp Servers CA"
key_type = "ec"

[endpoints.wifi]
challenge = "static"
static_challenge = "wifi-secret"

[endpoints.servers]
challenge = "static"
static_challenge = "servers-secret"
ca = "corp"
"""


@pytest.fixture(params=DEPLOYMENTS)
async def product(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningScepline]:
    config = tmp_path / "scepline.toml"
    config.write_text(CONFIG)
    async with (
        lab_deployment(
            request,
            config=config,
            sync_wait_seconds=5,
            crl_check_interval_seconds=0.2,
            public_base_url="http://scepline",
        ) as settings,
        running(settings) as running_product,
    ):
        yield running_product


def corp_ca(product: RunningScepline) -> x509.Certificate:
    assert product.embedded.cas is not None
    return product.embedded.cas.watchers["corp"].current().material().ca.certificate


async def enrol(  # type: ignore[no-untyped-def]
    product: RunningScepline,
    endpoint: str,
    label: str,
    challenge: str | None,
    who: Requester | None = None,
    key_label: str | None = None,
):
    who = who or requester(label)
    csr = build_csr(rsa_key(key_label or label), name(label), challenge=challenge)
    client = ScepClient(f"http://scepline/scep/{endpoint}", http=product.http)
    return await client.enrol(csr, who, transaction_id=f"tx-{label}-{endpoint}")


async def test_each_endpoint_is_signed_by_its_own_ca(product: RunningScepline):
    default_ca = product.embedded.material.ca.certificate
    corp = corp_ca(product)

    wifi = await enrol(product, "wifi", "laptop", "wifi-secret")
    servers = await enrol(product, "servers", "web", "servers-secret")
    served = await ScepClient("http://scepline/scep/servers", http=product.http).get_ca_certs()

    assert wifi.status is PkiStatus.SUCCESS and servers.status is PkiStatus.SUCCESS
    [laptop], [web] = wifi.certificates, servers.certificates
    laptop.verify_directly_issued_by(default_ca)
    web.verify_directly_issued_by(corp)
    assert web.issuer == corp.subject == x509.Name.from_rfc4514_string("CN=Corp Servers CA")
    assert corp in served and default_ca not in served
    stored = await product.embedded.repository.get_certificate(web.serial_number)
    assert stored is not None and stored.issuer_key_id == spki_sha256_hex(corp.public_key())


async def test_the_named_ca_publishes_its_crl_and_answers_ocsp(product: RunningScepline):
    corp = corp_ca(product)
    servers = await enrol(product, "servers", "web-2", "servers-secret")
    [web] = servers.certificates
    points = web.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    url = points[0].full_name[0].value
    assert url == f"http://scepline/crl/{spki_sha256_hex(corp.public_key())}.crl"

    crl = x509.load_der_x509_crl(
        (await product.http.get(url.removeprefix("http://scepline"))).content
    )
    query = (
        ocsp.OCSPRequestBuilder().add_certificate(web, corp, hashes.SHA256()).build()
    ).public_bytes(serialization.Encoding.DER)
    answer = await product.http.post(
        "/ocsp", content=query, headers={"Content-Type": "application/ocsp-request"}
    )

    assert crl.issuer == corp.subject and crl.is_signature_valid(corp.public_key())
    response = ocsp.load_der_ocsp_response(answer.content)
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD


async def test_a_renewal_is_one_of_the_endpoints_ca(product: RunningScepline):
    old = await enrol(product, "servers", "srv-r", "servers-secret")
    signer = Requester(key=rsa_key("srv-r"), certificate=old.certificates[0])
    wifi_old = await enrol(product, "wifi", "w-r", "wifi-secret")
    stranger = Requester(key=rsa_key("w-r"), certificate=wifi_old.certificates[0])

    renewed = await enrol(product, "servers", "srv-r", None, who=signer, key_label="srv-r2")
    foreign = await enrol(product, "servers", "w-r", None, who=stranger, key_label="w-r2")

    assert renewed.status is PkiStatus.SUCCESS
    renewed.certificates[0].verify_directly_issued_by(corp_ca(product))
    assert foreign.status is PkiStatus.FAILURE  # not a certificate of corp: a challenge is needed


async def test_the_journal_reconciles_over_both_cas(
    product: RunningScepline, capsys: pytest.CaptureFixture[str]
):
    await enrol(product, "servers", "web-j", "servers-secret")
    await enrol(product, "wifi", "laptop-j", "wifi-secret")
    capsys.readouterr()

    status = await print_journal(product.settings, check=True, as_json=False)

    out = capsys.readouterr().out
    assert status == 0, out
    assert "# 2 ocsp-certificate in-use" in out
    assert "CN=Corp Servers CA" in out


async def test_a_named_cas_keys_are_in_the_token_under_labels_of_their_own(
    tmp_path: Path, softhsm_config: Pkcs11Config
):
    labels = uuid.uuid4().hex[:10]
    config = tmp_path / "scepline.toml"
    config.write_text(CONFIG)
    settings = Settings(
        data_dir=tmp_path / "var",
        config=config,
        sync_wait_seconds=5,
        key_backend="pkcs11",
        pkcs11_module=softhsm_config.module,
        pkcs11_token_label=softhsm_config.token_label,
        pkcs11_pin=softhsm_config.pin,
        pkcs11_ca_key_label=f"ca-{labels}",
        pkcs11_ra_key_label=f"ra-{labels}",
        ca_key_size=2048,
    )
    async with running(settings) as product:
        servers = await enrol(product, "servers", "hsm-web", "servers-secret")
        corp = corp_ca(product)
        assert product.embedded.cas is not None
        key = product.embedded.cas.watchers["corp"].current().material().ca.key

    assert servers.status is PkiStatus.SUCCESS
    servers.certificates[0].verify_directly_issued_by(corp)
    assert isinstance(key, Pkcs11PrivateKey)
    assert f"ca-{labels}-corp" in str(key.ref)

"""Real SCEP clients from Debian enrol through a running ``scepline up``.

Each issued certificate must verify against the CA with ``openssl verify``,
carry the CSR's subject and SANs, and have been accepted by the client itself
(it wrote the certificate only after verifying and decrypting our CertRep).
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.processes import scepline_up
from tests.interop.clients import (
    EnrolResult,
    enrol_certmonger,
    enrol_scepclient,
    enrol_strongswan,
)

pytestmark = pytest.mark.interop

CHALLENGE = "interop-challenge"


class Server:
    def __init__(self, url: str, data_dir: Path, log: object) -> None:
        self.url = url
        self.ca_pem = data_dir / "ca" / "ca.crt"
        self._process = log

    @property
    def log(self) -> str:
        return self._process.log  # type: ignore[attr-defined,no-any-return]

    def pki_operations(self) -> Counter[tuple[str, str]]:
        """PKIOperations answered so far, by (messageType, outcome), from /metrics
        on the process's health port (operator surfaces stay off the SCEP port)."""
        metrics = httpx.get(self._process.metrics_url, timeout=5).text  # type: ignore[attr-defined]
        answered: Counter[tuple[str, str]] = Counter()
        for family in text_string_to_metric_families(metrics):
            for sample in family.samples:
                labels = sample.labels
                if sample.name == "scepline_scep_requests_total" and (
                    labels["operation"] == "PKIOperation"
                ):
                    answered[labels["message_type"], labels["outcome"]] = int(sample.value)
        return answered


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Debian's scepclient only speaks single DES, so this server allows it.
    data_dir = tmp_path_factory.mktemp("interop") / "var"
    with scepline_up(data_dir, static_challenge=CHALLENGE, scep_allow_des="true") as (url, proc):
        yield Server(url, data_dir, proc)


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("interop-strict") / "var"
    with scepline_up(data_dir, static_challenge=CHALLENGE) as (url, proc):
        yield Server(url, data_dir, proc)


@pytest.fixture(scope="module")
def pending_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Answers every new enrolment PENDING (SCEPLINE_SYNC_WAIT_SECONDS=0): clients poll."""
    data_dir = tmp_path_factory.mktemp("interop-pending") / "var"
    with scepline_up(data_dir, static_challenge=CHALLENGE, sync_wait_seconds="0") as (url, proc):
        yield Server(url, data_dir, proc)


def openssl_verify(ca_pem: Path, result: EnrolResult) -> None:
    assert result.certificate is not None
    leaf = result.workdir / "verify-leaf.pem"
    leaf.write_bytes(result.certificate.public_bytes(Encoding.PEM))
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca_pem), str(leaf)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def san_values(certificate: x509.Certificate) -> set[str]:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    values: set[str] = set()
    for name in names:
        value = name.value
        values.add(
            str(value)
            if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address)
            else value
        )
    return values


def common_name(certificate: x509.Certificate) -> str:
    return certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value  # type: ignore[return-value]


def assert_enrolled(server: Server, result: EnrolResult) -> x509.Certificate:
    assert result.ok, f"{result.client} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    openssl_verify(server.ca_pem, result)
    assert result.certificate is not None
    return result.certificate


def test_micromdm_scepclient_enrols(server: Server, tmp_path: Path):
    result = enrol_scepclient(server.url, tmp_path, challenge=CHALLENGE, cn="scepclient-dev")
    certificate = assert_enrolled(server, result)
    assert common_name(certificate) == "scepclient-dev"


def test_micromdm_scepclient_renews_with_renewal_req(server: Server, tmp_path: Path):
    first = enrol_scepclient(server.url, tmp_path / "a", challenge=CHALLENGE, cn="renew-sc")
    old = assert_enrolled(server, first)
    renewed = enrol_scepclient(
        server.url,
        tmp_path / "b",
        challenge="not-needed-for-renewal",
        cn="renew-sc",
        renew_cert=first.workdir / "client.pem",
        renew_key=first.key_path,
    )
    new = assert_enrolled(server, renewed)
    assert new.serial_number != old.serial_number
    assert common_name(new) == "renew-sc"


def test_micromdm_scepclient_with_a_wrong_challenge_gets_no_certificate(
    server: Server, tmp_path: Path
):
    result = enrol_scepclient(server.url, tmp_path, challenge="wrong", cn="intruder")
    assert not result.ok
    assert (
        "badRequest" in result.stdout + result.stderr or "FAILURE" in result.stdout + result.stderr
    )


def test_single_des_is_refused_with_bad_alg_and_a_log_line_naming_the_setting(
    strict_server: Server, tmp_path: Path
):
    result = enrol_scepclient(strict_server.url, tmp_path, challenge=CHALLENGE, cn="des-dev")
    assert not result.ok
    assert "SCEPLINE_SCEP_ALLOW_DES" in strict_server.log
    assert '"fail_info": "badAlg"' in strict_server.log


def test_strongswan_enrols_with_sans(server: Server, tmp_path: Path):
    sans = ["dns:vpn-gw.example.com", "email:ops@example.com", "192.0.2.7"]
    result = enrol_strongswan(
        server.url,
        tmp_path,
        challenge=CHALLENGE,
        dn="C=US, O=scepline, CN=strongswan-dev",
        sans=sans,
    )
    certificate = assert_enrolled(server, result)
    assert common_name(certificate) == "strongswan-dev"
    assert san_values(certificate) == {"vpn-gw.example.com", "ops@example.com", "192.0.2.7"}


def test_strongswan_enrols_with_rsa_pss_signatures(server: Server, tmp_path: Path):
    """``--rsa-padding pss``: the pkiMessage, its signer certificate and the CSR
    are RSASSA-PSS signed (SHA-256, MGF1 with SHA-256, 32 bytes of salt)."""
    result = enrol_strongswan(
        server.url,
        tmp_path,
        challenge=CHALLENGE,
        dn="C=US, O=scepline, CN=strongswan-pss",
        rsa_padding="pss",
    )
    certificate = assert_enrolled(server, result)
    assert common_name(certificate) == "strongswan-pss"


def test_strongswan_renews_with_renewal_req_and_a_new_key(server: Server, tmp_path: Path):
    first = enrol_strongswan(
        server.url, tmp_path / "a", challenge=CHALLENGE, dn="CN=strongswan-renew"
    )
    old = assert_enrolled(server, first)
    assert first.certificate is not None
    (tmp_path / "old.pem").write_bytes(first.certificate.public_bytes(Encoding.PEM))
    renewed = enrol_strongswan(
        server.url,
        tmp_path / "b",
        challenge="ignored",
        dn="CN=strongswan-renew",
        renew_cert=tmp_path / "old.pem",
        renew_key=first.key_path,
    )
    new = assert_enrolled(server, renewed)
    assert new.serial_number != old.serial_number
    assert new.public_key() != old.public_key()


@pytest.mark.parametrize("cipher", ["des3"])
def test_strongswan_with_legacy_3des(server: Server, tmp_path: Path, cipher: str):
    result = enrol_strongswan(
        server.url,
        tmp_path,
        challenge=CHALLENGE,
        dn="CN=strongswan-3des",
        cipher=cipher,
        digest="sha1",
    )
    assert_enrolled(server, result)


def test_certmonger_enrols_with_sans(server: Server, tmp_path: Path):
    result = enrol_certmonger(
        server.url,
        tmp_path,
        challenge=CHALLENGE,
        subject="CN=certmonger-dev,O=scepline",
        sans=["dns:host.example.com", "email:host@example.com"],
    )
    certificate = assert_enrolled(server, result)
    assert common_name(certificate) == "certmonger-dev"
    assert san_values(certificate) == {"host.example.com", "host@example.com"}


def test_certmonger_renews_with_a_pkcsreq_signed_by_the_old_certificate(
    server: Server, tmp_path: Path
):
    result = enrol_certmonger(
        server.url, tmp_path, challenge=CHALLENGE, subject="CN=certmonger-renew", renew=True
    )
    new = assert_enrolled(server, result)
    initial = x509.load_pem_x509_certificate((result.workdir / "cert-initial.pem").read_bytes())
    assert new.serial_number != initial.serial_number
    assert new.public_key() == initial.public_key()  # certmonger keeps its key


def assert_certmonger_rejected(result: EnrolResult) -> None:
    """certmonger took the CertRep FAILURE as the CA's refusal, not as an unreachable CA
    (which it would retry for ever)."""
    assert not result.ok
    assert result.certmonger_status == "CA_REJECTED", (
        f"{result.certmonger_status}: {result.certmonger_ca_error}\n{result.stderr[-3000:]}"
    )
    # certmonger's words for failInfo badRequest.
    assert "not permitted" in result.certmonger_ca_error


def test_certmonger_with_a_wrong_challenge_is_rejected_by_the_ca(server: Server, tmp_path: Path):
    result = enrol_certmonger(
        server.url, tmp_path, challenge="wrong", subject="CN=certmonger-intruder"
    )
    assert_certmonger_rejected(result)


def polled_pending(server: Server, before: Counter[tuple[str, str]], outcome: str) -> None:
    """Since ``before``, certmonger's PKCSReq was answered PENDING, and its poll got
    ``outcome``. certmonger 0.79 polls by sending the same PKCSReq again, not a CertPoll."""
    answered = server.pki_operations() - before
    assert answered["PKCS_REQ", "PENDING"] >= 1, answered
    assert answered["PKCS_REQ", outcome] == 1, answered
    assert not any(message_type == "CERT_POLL" for message_type, _ in answered), answered


def test_certmonger_polls_a_pending_request_until_it_is_issued(
    pending_server: Server, tmp_path: Path
):
    before = pending_server.pki_operations()
    result = enrol_certmonger(
        pending_server.url, tmp_path, challenge=CHALLENGE, subject="CN=certmonger-pending"
    )
    certificate = assert_enrolled(pending_server, result)
    assert common_name(certificate) == "certmonger-pending"
    assert result.certmonger_status == "MONITORING"
    polled_pending(pending_server, before, "SUCCESS")


def test_certmonger_polls_a_pending_request_until_it_is_rejected(
    pending_server: Server, tmp_path: Path
):
    before = pending_server.pki_operations()
    result = enrol_certmonger(
        pending_server.url, tmp_path, challenge="wrong", subject="CN=certmonger-refused"
    )
    assert_certmonger_rejected(result)
    polled_pending(pending_server, before, "FAILURE_badRequest")


def test_strongswan_with_a_wrong_challenge_reads_the_failure(server: Server, tmp_path: Path):
    result = enrol_strongswan(server.url, tmp_path, challenge="wrong", dn="CN=strongswan-intruder")
    assert not result.ok
    assert "pkiStatus:    FAILURE" in result.stderr
    assert "badRequest" in result.stderr

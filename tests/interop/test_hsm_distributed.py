"""The whole pipeline with its CA and RA keys in a SoftHSM2 token.

Separately started processes (two ingress replicas, a validator, a signer and a
notifier) on RabbitMQ and PostgreSQL, after ``scepline ca init`` generated the CA
and RA keys inside the token (``SCEPLINE_KEY_BACKEND=pkcs11``, the PIN in a 0600
file). Real clients enrol through it; the certificates verify with ``openssl``
and point at the CRL ingress serves; ``scepline cert revoke`` puts a certificate
on that CRL within seconds; the private keys are nowhere but in the token, and
the PIN is in no log and no command output.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from scepline_shared.keys import spki_sha256_hex
from scepline_shared.keys.pkcs11 import Pkcs11Config, Pkcs11Token
from tests.fixtures.processes import ClusterInfo, scepline_cluster
from tests.interop.clients import EnrolResult, enrol_certmonger, enrol_strongswan
from tests.interop.test_clients import CHALLENGE, Server, assert_enrolled, common_name
from tests.support.commands import run_scepline
from tests.support.pkcs11 import assert_never_leaves_the_token, private_key_attributes

pytestmark = [pytest.mark.interop, pytest.mark.postgres, pytest.mark.rabbitmq]

# How long a revocation may take to reach the CRL: the signer checks every second.
CRL_DEADLINE_SECONDS = 20

PID_FIELD = re.compile(r'"pid": \d+')


@dataclass
class HsmCluster:
    pending: Server  # ingress with SCEPLINE_SYNC_WAIT_SECONDS=0: always PENDING first
    waiting: Server  # ingress that waits for the outcome; public_base_url points here
    info: ClusterInfo
    base: Path  # where every process writes <name>.log
    env: dict[str, str]  # the cluster's SCEPLINE_* settings, for admin commands
    public_base_url: str
    ca_label: str
    ra_label: str
    pin: str
    transcripts: list[str] = field(default_factory=list)  # admin command output

    @property
    def ca_dir(self) -> Path:
        return self.info.data_dir / "ca"

    @property
    def ca_certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate((self.ca_dir / "ca.crt").read_bytes())

    @property
    def crl_url(self) -> str:
        key_id = spki_sha256_hex(self.ca_certificate.public_key())
        return f"{self.public_base_url}/crl/{key_id}.crl"

    def scepline(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``scepline ARGS`` as an operator runs it beside the cluster."""
        done = run_scepline(self.env, *args)
        self.transcripts.append(f"$ scepline {' '.join(args)}\n{done.stdout}{done.stderr}")
        return done

    def process_logs(self) -> dict[str, str]:
        return {path.name: path.read_text(errors="replace") for path in self.base.glob("*.log")}


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    rabbitmq_url: str,
    postgres_admin_dsn: str,
    softhsm_config: Pkcs11Config,  # sets SOFTHSM2_CONF, which every process inherits
) -> Iterator[HsmCluster]:
    base = tmp_path_factory.mktemp("hsm-distributed")
    pin_file = base / "token.pin"
    descriptor = os.open(pin_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(softhsm_config.pin + "\n")
    tag = uuid.uuid4().hex[:10]
    ca_label, ra_label = f"hsm-ca-{tag}", f"hsm-ra-{tag}"
    settings = {
        "static_challenge": CHALLENGE,
        "key_backend": "pkcs11",
        "pkcs11_module": softhsm_config.module,
        "pkcs11_token_label": softhsm_config.token_label,
        "pkcs11_pin_file": str(pin_file),
        "pkcs11_ca_key_label": ca_label,
        "pkcs11_ra_key_label": ra_label,
        "pkcs11_ra_in_token": "true",
        "ca_key_size": "2048",
        "crl_check_interval_seconds": "1",
    }
    with scepline_cluster(
        base,
        rabbitmq_url=rabbitmq_url,
        postgres_admin_dsn=postgres_admin_dsn,
        settings=settings,
        ingress_sync_wait={"pending": "0", "waiting": "20"},
        public_ingress="waiting",
    ) as info:
        yield HsmCluster(
            pending=Server(info.urls["pending"], info.data_dir, info.ingress["pending"]),
            waiting=Server(info.urls["waiting"], info.data_dir, info.ingress["waiting"]),
            info=info,
            base=base,
            env=info.env,
            public_base_url=info.env["SCEPLINE_PUBLIC_BASE_URL"],
            ca_label=ca_label,
            ra_label=ra_label,
            pin=softhsm_config.pin,
        )


@pytest.fixture(scope="module")
def strongswan_enrolment(
    cluster: HsmCluster, tmp_path_factory: pytest.TempPathFactory
) -> EnrolResult:
    return enrol_strongswan(
        cluster.pending.url,
        tmp_path_factory.mktemp("strongswan"),
        challenge=CHALLENGE,
        dn="CN=hsm-polled-by-strongswan",
        sans=["dns:hsm-polled.example.com"],
        poll_interval=1,
        max_poll_time=60,
    )


@pytest.fixture(scope="module")
def certmonger_enrolment(
    cluster: HsmCluster, tmp_path_factory: pytest.TempPathFactory
) -> EnrolResult:
    return enrol_certmonger(
        cluster.waiting.url,
        tmp_path_factory.mktemp("certmonger"),
        challenge=CHALLENGE,
        subject="CN=hsm-certmonger",
        sans=["dns:hsm-cm.example.com"],
    )


# -- helpers ----------------------------------------------------------------------------


def distribution_points(certificate: x509.Certificate) -> list[str]:
    extension = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    return [
        name.value
        for point in extension.value
        for name in point.full_name or ()
        if isinstance(name, x509.UniformResourceIdentifier)
    ]


def fetch_crl(url: str) -> x509.CertificateRevocationList:
    response = httpx.get(url, timeout=5)
    assert response.status_code == 200, f"GET {url}: {response.status_code} {response.text}"
    assert response.headers["content-type"] == "application/pkix-crl"
    return x509.load_der_x509_crl(response.content)


def crl_listing(url: str, serial: int, *, timeout: float) -> x509.CertificateRevocationList:
    """Poll the CRL at ``url`` until it lists ``serial``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    crl = fetch_crl(url)
    while crl.get_revoked_certificate_by_serial_number(serial) is None:
        assert time.monotonic() < deadline, f"{serial:x} not on the CRL at {url} in {timeout} s"
        time.sleep(0.25)
        crl = fetch_crl(url)
    return crl


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)


def write_pem(path: Path, item: x509.Certificate | x509.CertificateRevocationList) -> Path:
    path.write_bytes(item.public_bytes(Encoding.PEM))
    return path


def verify_with_crl(
    cluster: HsmCluster,
    certificate: x509.Certificate,
    crl: x509.CertificateRevocationList,
    at: Path,
) -> subprocess.CompletedProcess[str]:
    return openssl(
        "verify",
        "-crl_check",
        "-CAfile",
        str(cluster.ca_dir / "ca.crt"),
        "-CRLfile",
        str(write_pem(at / "crl.pem", crl)),
        str(write_pem(at / "leaf.pem", certificate)),
    )


# -- enrolment ------------------------------------------------------------------------


def test_strongswan_polls_a_pending_request_until_the_token_signed_certificate_is_issued(
    cluster: HsmCluster, strongswan_enrolment: EnrolResult
):
    certificate = assert_enrolled(cluster.pending, strongswan_enrolment)  # openssl verify
    assert common_name(certificate) == "hsm-polled-by-strongswan"
    transcript = strongswan_enrolment.stdout + strongswan_enrolment.stderr
    assert "PENDING" in transcript or "pending" in transcript
    assert distribution_points(certificate) == [cluster.crl_url]


def test_certmonger_enrols_through_the_other_replica_and_gets_the_crl_distribution_point(
    cluster: HsmCluster, certmonger_enrolment: EnrolResult
):
    certificate = assert_enrolled(cluster.waiting, certmonger_enrolment)  # openssl verify
    assert common_name(certificate) == "hsm-certmonger"
    assert distribution_points(certificate) == [cluster.crl_url]


# -- revocation and the CRL -------------------------------------------------------------


def test_a_certificate_not_revoked_passes_openssl_crl_check_with_the_published_crl(
    cluster: HsmCluster, certmonger_enrolment: EnrolResult, tmp_path: Path
):
    assert certmonger_enrolment.certificate is not None, certmonger_enrolment.stdout[-3000:]
    crl = fetch_crl(cluster.crl_url)  # the signer publishes one when it starts
    assert crl.is_signature_valid(cluster.ca_certificate.public_key())
    verified = verify_with_crl(cluster, certmonger_enrolment.certificate, crl, tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_revoked_certificate_is_on_the_token_signed_crl_at_its_distribution_point(
    cluster: HsmCluster, strongswan_enrolment: EnrolResult, tmp_path: Path
):
    certificate = strongswan_enrolment.certificate
    assert certificate is not None, strongswan_enrolment.stdout[-3000:]
    serial = certificate.serial_number
    common_name = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value

    # The operator finds the device's certificate by name, then revokes it.
    found = cluster.scepline("cert", "find", str(common_name).upper())
    assert found.returncode == 0, found.stdout + found.stderr
    assert f"{serial:x}" in found.stdout and "valid" in found.stdout
    revoked = cluster.scepline("cert", "revoke", f"{serial:x}", "--reason", "key-compromise")
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    assert f"{serial:x}" in revoked.stdout.lower()
    shown = cluster.scepline("cert", "show", f"{serial:x}")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "revoked at" in shown.stdout and "key-compromise" in shown.stdout

    (url,) = distribution_points(certificate)
    crl = crl_listing(url, serial, timeout=CRL_DEADLINE_SECONDS)
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason == x509.ReasonFlags.key_compromise
    assert crl.issuer == cluster.ca_certificate.subject

    # The CRL was signed by the CA key in the token: it verifies under the CA certificate.
    assert crl.is_signature_valid(cluster.ca_certificate.public_key())
    checked = openssl(
        "crl",
        "-in",
        str(write_pem(tmp_path / "signed.crl.pem", crl)),
        "-CAfile",
        str(cluster.ca_dir / "ca.crt"),
        "-noout",
    )
    assert checked.returncode == 0 and "verify OK" in checked.stdout + checked.stderr, (
        checked.stdout + checked.stderr
    )

    verified = verify_with_crl(cluster, certificate, crl, tmp_path)
    assert verified.returncode != 0
    assert "certificate revoked" in verified.stdout + verified.stderr

    # /crl is the active CA's CRL: the same one, listing the revocation too.
    active = fetch_crl(f"{cluster.public_base_url}/crl")
    assert active.get_revoked_certificate_by_serial_number(serial) is not None


# -- the keys stay in the token ---------------------------------------------------------


def test_no_private_key_is_written_to_disk_and_keys_json_names_the_token_keys(
    cluster: HsmCluster, softhsm_token: Pkcs11Token
):
    assert {path.name for path in cluster.ca_dir.iterdir()} >= {"ca.crt", "ra.crt", "keys.json"}
    # The only key file is the store key (it seals stored CSRs): no CA or RA key.
    key_files = {
        path.relative_to(cluster.info.data_dir) for path in cluster.info.data_dir.rglob("*.key")
    }
    assert key_files <= {Path("store.key")}
    holding_a_key = [
        path
        for path in cluster.info.data_dir.rglob("*")
        if path.is_file() and b"PRIVATE KEY" in path.read_bytes()
    ]
    assert holding_a_key == []

    index = json.loads((cluster.ca_dir / "keys.json").read_text())
    assert index["ca"]["pkcs11_label"] == cluster.ca_label
    assert index["ra"]["pkcs11_label"] == cluster.ra_label
    for role, label in (("ca", cluster.ca_label), ("ra", cluster.ra_label)):
        assert index[role]["pkcs11_id"] == private_key_attributes(softhsm_token, label)["id"].hex()  # type: ignore[union-attr]


@pytest.mark.parametrize("role", ["ca", "ra"])
def test_the_token_keys_are_sensitive_and_never_extractable(
    cluster: HsmCluster, softhsm_token: Pkcs11Token, role: str
):
    label = cluster.ca_label if role == "ca" else cluster.ra_label
    # generated inside the token by `scepline ca init`
    assert_never_leaves_the_token(private_key_attributes(softhsm_token, label))


# -- operator commands and logs ---------------------------------------------------------


def test_ca_show_names_the_token_keys(cluster: HsmCluster):
    shown = cluster.scepline("ca", "show")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "generation 0: active" in shown.stdout
    assert f"pkcs11 label={cluster.ca_label!r}" in shown.stdout
    assert f"pkcs11 label={cluster.ra_label!r}" in shown.stdout


def test_the_pin_is_in_no_process_log_and_no_command_output(
    cluster: HsmCluster, strongswan_enrolment: EnrolResult, certmonger_enrolment: EnrolResult
):
    if not cluster.transcripts:  # run alone: have at least one command's output to check
        cluster.scepline("ca", "show")
    logs = cluster.process_logs()
    assert {"ingress-pending.log", "ingress-waiting.log", "signer.log"} <= set(logs)
    assert "pkcs11 session opened" in logs["signer.log"]  # it did log in with the PIN
    # The PIN as a word of its own: a short numeric PIN is no leak inside a hash, a
    # port, a duration or a process id ("pid": N in every log line).
    pin = re.compile(rf"(?<!\w)(?<!\d\.){re.escape(cluster.pin)}(?!\w)(?!\.\d)")
    texts = {**logs, **{f"command {n}": text for n, text in enumerate(cluster.transcripts)}}
    leaks = {
        name: [line for line in text.splitlines() if pin.search(PID_FIELD.sub("", line))]
        for name, text in texts.items()
    }
    assert {name: lines for name, lines in leaks.items() if lines} == {}

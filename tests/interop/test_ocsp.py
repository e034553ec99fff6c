"""Real OCSP clients check the certificates scepline issued.

A real SCEP client (micromdm ``scepclient``, strongSwan ``pki --scep``) enrols;
then OCSP clients that are not our code ask about the certificate and verify
the answer's signature chain against the CA certificate alone (the answer is
signed by the CA generation's delegated responder, whose certificate it carries):

- OpenSSL 3.0 ``openssl ocsp``: POST, with and without a nonce, SHA-1 to SHA-512
  CertIDs, several certificates in one request, a signed request. It has no
  GET option, so GET requests are built with ``-reqout``, fetched as
  ``/ocsp/<url-encoded base64>`` and the answers checked with ``-respin``;
- GnuTLS ``ocsptool --ask``, with ``--load-trust ca.crt`` (it verifies the
  responder certificate up to that anchor, and refuses under another);
- strongSwan ``pki --verify --online`` (Debian's revocation and curl plugins),
  which finds the responder in the certificate's Authority Information Access,
  as a VPN gateway does.

Deployments: ``scepline up`` (two serving processes on two cores, each with its
own cache); ``scepline ocsp`` alone beside it; the pipeline on RabbitMQ and
PostgreSQL with a ``scepline ocsp`` of its own; ``scepline up`` with its keys
(the responder's too) in a SoftHSM2 token. Every deployment re-reads statuses
every CHECK_INTERVAL seconds (SCEPLINE_CRL_CHECK_INTERVAL_SECONDS), so
``scepline cert revoke`` shows within that. Requests no client would send are
answered with an OCSP error status (or a 400), never an HTTP 5xx.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import email.utils
import hashlib
import itertools
import json
import os
import re
import socket
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from asn1crypto import core
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from scepline_shared.keys.pkcs11 import Pkcs11Config, Pkcs11Token
from tests.fixtures.processes import ScepProcess, free_port, scepline_cluster, scepline_ocsp
from tests.fixtures.processes import scepline_up as run_scepline_up
from tests.fixtures.scepline import data_dir_with_ca
from tests.interop.clients import EnrolResult, enrol_scepclient, enrol_strongswan
from tests.support.commands import run_scepline
from tests.support.pkcs11 import assert_never_leaves_the_token, private_key_attributes
from tests.support.pki import rsa_key, self_signed

pytestmark = pytest.mark.interop

CHALLENGE = "ocsp-interop"
# SCEPLINE_CRL_CHECK_INTERVAL_SECONDS of every deployment here: how often the
# responders re-read the statuses behind their cached answers.
CHECK_INTERVAL = 2.0
# Beyond the interval, for a revocation to show: a client's round trip and a
# loaded two-core machine.
MARGIN = 5.0
# How often each responder process looks at the CA directory for new or
# renewed responder certificates (scepline_shared.ocsp.directory).
DIRECTORY_RECHECK = 5.0
# SCEPLINE_OCSP_MAX_REQUEST_BYTES left at its default.
MAX_REQUEST_BYTES = 8192
OCSP_REQUEST = "application/ocsp-request"
OCSP_RESPONSE = "application/ocsp-response"

T = TypeVar("T")


# -- deployments ------------------------------------------------------------------------


@dataclass(frozen=True)
class Deployment:
    """Where scepline answers OCSP, and the CA directory it answers for."""

    url: str  # the OCSP URL, <base>/ocsp
    data_dir: Path
    env: Mapping[str, str]  # SCEPLINE_* settings, for `scepline` commands beside it
    process: ScepProcess | None = None

    @property
    def base(self) -> str:
        return self.url.removesuffix("/ocsp")

    @property
    def port(self) -> int:
        port = urllib.parse.urlsplit(self.url).port
        assert port is not None
        return port

    @property
    def ca_pem(self) -> Path:
        return self.data_dir / "ca" / "ca.crt"

    @property
    def ca(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.ca_pem.read_bytes())

    @property
    def responder(self) -> x509.Certificate:
        """Generation 0's delegated responder certificate (the signer issued it)."""
        return x509.load_pem_x509_certificate((self.data_dir / "ca" / "ocsp.crt").read_bytes())

    def scepline(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``scepline ARGS`` as an operator runs it beside the deployment."""
        return run_scepline(self.env, *args)


def settings_env(data_dir: Path, settings: Mapping[str, str]) -> dict[str, str]:
    return {
        "SCEPLINE_DATA_DIR": str(data_dir),
        **{f"SCEPLINE_{key.upper()}": value for key, value in settings.items()},
    }


@contextlib.contextmanager
def scepline_up(data_dir: Path, **settings: str) -> Iterator[tuple[str, Deployment]]:
    """``scepline up`` whose SCEPLINE_PUBLIC_BASE_URL is its own address, so
    issued certificates name its /ocsp in their AIA; yields its SCEP URL too."""
    port = free_port()
    settings = {
        "static_challenge": CHALLENGE,
        "public_base_url": f"http://127.0.0.1:{port}",
        "crl_check_interval_seconds": str(CHECK_INTERVAL),
        **settings,
    }
    with run_scepline_up(data_dir, port=port, **settings) as (scep_url, process):
        env = settings_env(data_dir, settings)
        yield scep_url, Deployment(f"http://127.0.0.1:{port}/ocsp", data_dir, env, process)


@dataclass(frozen=True)
class Device:
    """A certificate a real SCEP client enrolled for, as the client wrote it."""

    certificate: x509.Certificate
    pem: Path
    key: Path  # its private key (PEM), as the client made it

    @property
    def serial(self) -> str:
        return f"{self.certificate.serial_number:x}"


def enrolled(result: EnrolResult) -> Device:
    assert result.ok, f"{result.client} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.certificate is not None
    pem = result.workdir / "enrolled.pem"
    pem.write_bytes(result.certificate.public_bytes(Encoding.PEM))
    return Device(result.certificate, pem, result.key_path)


def enrol(scep_url: str, workdir: Path, cn: str) -> Device:
    """micromdm scepclient (single DES: the deployment allows it)."""
    return enrolled(enrol_scepclient(scep_url, workdir, challenge=CHALLENGE, cn=cn))


# -- OpenSSL ----------------------------------------------------------------------------

_files = itertools.count()


@dataclass(frozen=True)
class OpensslAnswer:
    """One ``openssl ocsp`` run: its transcript, and the request and response it
    wrote (``-reqout``, ``-respout``), parsed."""

    argv: list[str]
    returncode: int
    output: str  # stdout and stderr
    request_der: bytes
    response_der: bytes

    @property
    def response(self) -> ocsp.OCSPResponse:
        return ocsp.load_der_ocsp_response(self.response_der)

    @property
    def verified(self) -> bool:
        """OpenSSL checked the signature and the responder chain up to -CAfile."""
        return self.returncode == 0 and "Response verify OK" in self.output

    def status(self, label: str | Path) -> str | None:
        """What OpenSSL printed for ``label`` (the -cert path or the -serial)."""
        found = re.search(rf"^{re.escape(str(label))}: (\w+)$", self.output, re.MULTILINE)
        return None if found is None else found.group(1)

    def __str__(self) -> str:
        return f"$ {' '.join(self.argv)}\n# exit {self.returncode}\n{self.output}"


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, timeout=30, check=False
    )


def openssl_ocsp(
    deployment: Deployment,
    workdir: Path,
    *which: str | Path,
    nonce: bool = True,
    digest: str = "sha1",
    url: str | None = None,
) -> OpensslAnswer:
    """``openssl ocsp -url URL -issuer ca.crt -CAfile ca.crt -<digest> WHICH``;
    ``which`` is ``("-cert", pem)`` or ``("-serial", "0x...")``."""
    n = next(_files)
    request, response = workdir / f"request-{n}.der", workdir / f"response-{n}.der"
    argv = [
        "openssl",
        "ocsp",
        "-url",
        url or deployment.url,
        "-timeout",
        "20",
        "-issuer",
        str(deployment.ca_pem),
        "-CAfile",
        str(deployment.ca_pem),
        "-reqout",
        str(request),
        "-respout",
        str(response),
        *([] if nonce else ["-no_nonce"]),
        f"-{digest}",  # before -cert/-serial: it applies to the CertIDs that follow
        *map(str, which),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return OpensslAnswer(
        argv,
        done.returncode,
        done.stdout + done.stderr,
        request.read_bytes() if request.exists() else b"",
        response.read_bytes() if response.exists() else b"",
    )


def openssl_request(deployment: Deployment, workdir: Path, pem: Path, *, nonce: bool) -> Path:
    """A request built by ``openssl ocsp -reqout`` (no -url: nothing is sent)."""
    path = workdir / f"request-{next(_files)}.der"
    made = openssl(
        "ocsp",
        "-issuer",
        deployment.ca_pem,
        "-cert",
        pem,
        *([] if nonce else ["-no_nonce"]),
        "-reqout",
        path,
    )
    assert made.returncode == 0, made.stderr
    return path


@dataclass(frozen=True)
class OpensslCheck:
    """``openssl ocsp -respin`` of an answer fetched some other way."""

    done: subprocess.CompletedProcess[str]
    status: str | None  # the certificate's status, as OpenSSL read it

    @property
    def verified(self) -> bool:
        return self.done.returncode == 0 and "Response verify OK" in self.done.stderr

    def __str__(self) -> str:
        return f"$ {' '.join(self.done.args)}\n{self.done.stdout}{self.done.stderr}"


def openssl_check(
    deployment: Deployment, workdir: Path, response: bytes, pem: Path, request: Path | None = None
) -> OpensslCheck:
    """Verify ``response`` against the CA with ``openssl ocsp -respin``.

    With ``request`` (``-reqin``), OpenSSL also checks that the answer echoes the
    request's nonce; it then prints the status only with ``-resp_text`` (given
    ``-cert`` it would build a request of its own, with a nonce of its own)."""
    path = workdir / f"fetched-{next(_files)}.der"
    path.write_bytes(response)
    verify = ["-respin", path, "-CAfile", deployment.ca_pem]
    if request is None:
        done = openssl("ocsp", *verify, "-no_nonce", "-issuer", deployment.ca_pem, "-cert", pem)
        found = re.search(rf"^{re.escape(str(pem))}: (\w+)$", done.stdout, re.MULTILINE)
    else:
        done = openssl("ocsp", *verify, "-reqin", request, "-resp_text")
        found = re.search(r"^\s*Cert Status: (\w+)$", done.stdout, re.MULTILINE)
    return OpensslCheck(done, None if found is None else found.group(1))


def request_nonce(der: bytes) -> bytes | None:
    for extension in asn1_ocsp.OCSPRequest.load(der)["tbs_request"]["request_extensions"]:
        if extension["extn_id"].native == "nonce":
            return bytes(extension["extn_value"].parsed.native)
    return None


def response_nonce(response: ocsp.OCSPResponse) -> bytes | None:
    try:
        return response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


# -- GnuTLS and strongSwan ---------------------------------------------------------------


def ocsptool_ask(
    deployment: Deployment,
    workdir: Path,
    pem: Path,
    *,
    trust: Path,
    url: str | None = None,
    nonce: bool = False,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``ocsptool --ask[=URL] --load-issuer ca.crt --load-cert PEM --load-trust
    TRUST``: without URL it asks the responder the certificate's AIA names; it
    verifies the answer's signer up to TRUST. Returns its run and the answer (DER)."""
    answer = workdir / f"ocsptool-{next(_files)}.der"
    argv = [
        "ocsptool",
        "--ask" if url is None else f"--ask={url}",
        "--load-issuer",
        str(deployment.ca_pem),
        "--load-cert",
        str(pem),
        "--load-trust",
        str(trust),
        *(["--nonce"] if nonce else []),
        "--outfile",
        str(answer),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return done, answer


def pki_verify_online(deployment: Deployment, pem: Path) -> subprocess.CompletedProcess[str]:
    """strongSwan ``pki --verify --online`` (its revocation and curl plugins):
    the certificate's AIA names the responder; CRLs are only its fallback."""
    done = subprocess.run(
        ["pki", "--verify", "--in", str(pem), "--cacert", str(deployment.ca_pem), "--online"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "LC_ALL": "C"},
    )
    # Debian's pki loads a TPM plugin that cannot find its library: noise.
    noise = re.compile(r"TPM 2\.0|plugin 'tpm'")
    kept = [line for line in (done.stdout + done.stderr).splitlines() if not noise.search(line)]
    return subprocess.CompletedProcess(done.args, done.returncode, "\n".join(kept), "")


# -- HTTP ---------------------------------------------------------------------------------


def get_url(deployment: Deployment, der: bytes, *, escape_slashes: bool = True) -> str:
    """RFC 6960 A.1: <url>/<url-encoding of the base64 of the DER request>."""
    encoded = base64.b64encode(der).decode()
    quoted = urllib.parse.quote(encoded, safe="" if escape_slashes else "/")
    return f"{deployment.url}/{quoted}"


def post(deployment: Deployment, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        deployment.url,
        content=body,
        headers={"Content-Type": OCSP_REQUEST, **headers},
        timeout=30,
    )


def answered(response: httpx.Response) -> ocsp.OCSPResponse:
    """The OCSPResponse of an HTTP 200 with the OCSP media type."""
    assert response.status_code == 200, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == OCSP_RESPONSE
    return ocsp.load_der_ocsp_response(response.content)


def raw_http(port: int, message: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send ``message`` on a fresh TCP connection and read until the server closes
    it: (status line, headers with lower-case names, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(message)
        received = bytearray()
        while chunk := connection.recv(65536):
            received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    status, *fields = head.decode("latin-1").split("\r\n")
    headers = {}
    for field in fields:
        name, _, value = field.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


# -- requests built without our codec ---------------------------------------------------


def issuer_hashes(ca: x509.Certificate, algorithm: str) -> tuple[bytes, bytes]:
    """RFC 6960 4.1.1: the hash of the issuer's DER name and of its public key's BIT STRING."""
    parsed = asn1_x509.Certificate.load(ca.public_bytes(Encoding.DER))
    name = parsed.subject.dump()
    key = parsed.public_key["public_key"].contents[1:]  # without the unused-bits octet
    return hashlib.new(algorithm, name).digest(), hashlib.new(algorithm, key).digest()


def request_for(ca: x509.Certificate, serial: int, *, algorithm: str = "sha1") -> bytes:
    """A nonce-less request naming ``serial`` under ``ca`` (cryptography's builder)."""
    name_hash, key_hash = issuer_hashes(ca, algorithm)
    digest = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256()}[algorithm]
    return (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(name_hash, key_hash, serial, digest)
        .build()
        .public_bytes(Encoding.DER)
    )


def edited(der: bytes, edit: Callable[[asn1_ocsp.TBSRequest], None]) -> bytes:
    request = asn1_ocsp.OCSPRequest.load(der)
    edit(request["tbs_request"])
    return request.dump(force=True)


def with_extension(der: bytes, oid: str, value: bytes | core.Asn1Value) -> bytes:
    """``der`` with one more request extension: ``value`` is the extnValue's
    contents (the DER of what it wraps), or what it wraps for an OID asn1crypto knows."""

    def add(tbs: asn1_ocsp.TBSRequest) -> None:
        extensions = [extension.copy() for extension in tbs["request_extensions"]]
        extensions.append({"extn_id": oid, "critical": False, "extn_value": value})
        tbs["request_extensions"] = extensions

    return edited(der, add)


def with_nonce(der: bytes, nonce: bytes) -> bytes:
    """RFC 9654: the nonce extension's extnValue wraps an OCTET STRING of the nonce."""
    return with_extension(der, "nonce", core.OctetString(nonce))


def single_serial(response: ocsp.OCSPResponse) -> int:
    (single,) = list(response.responses)
    return single.serial_number


# -- waiting ------------------------------------------------------------------------------


def until(check: Callable[[], T | None], *, timeout: float, what: str) -> tuple[T, float]:
    """Call ``check`` until it returns something; that and the seconds it took."""
    started = time.monotonic()
    while True:
        found = check()
        elapsed = time.monotonic() - started
        if found is not None:
            return found, elapsed
        assert elapsed < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.2)


def answering(deployment: Deployment, timeout: float = 60) -> None:
    """Wait until ``deployment`` answers (tryLater until the signer issued the
    responder certificate and the responder read it)."""

    def successful() -> bool | None:
        with contextlib.suppress(httpx.HTTPError):
            response = post(deployment, request_for(deployment.ca, deployment.ca.serial_number))
            if answered(response).response_status is ocsp.OCSPResponseStatus.SUCCESSFUL:
                return True
        return None

    until(successful, timeout=timeout, what=f"a successful OCSP answer from {deployment.url}")


@dataclass(frozen=True)
class Revoked:
    """What ``scepline cert revoke`` did."""

    device: Device
    at: datetime  # the revocation time, as the command printed it
    returned: float  # time.monotonic() when the command returned (committed)

    def settled(self) -> None:
        """Wait until every responder process has re-read the store since the
        revocation: until then one may still serve the good answer it cached."""
        time.sleep(max(0.0, self.returned + CHECK_INTERVAL + 0.5 - time.monotonic()))


@dataclass(frozen=True)
class Revocation:
    revoked: Revoked
    seconds: float  # from the command's return to the first answer saying so
    first: OpensslAnswer  # that answer

    @property
    def device(self) -> Device:
        return self.revoked.device

    @property
    def revoked_at(self) -> datetime:
        return self.revoked.at


def revoke(deployment: Deployment, device: Device) -> Revoked:
    """``scepline cert revoke SERIAL --reason key-compromise``, beside the deployment."""
    done = deployment.scepline("cert", "revoke", device.serial, "--reason", "key-compromise")
    returned = time.monotonic()
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"revoked at (\S+) \(key-compromise\)", done.stdout)
    assert found is not None, done.stdout
    return Revoked(device, datetime.fromisoformat(found.group(1)), returned)


def watch_revocation(deployment: Deployment, revoked: Revoked, workdir: Path) -> Revocation:
    """Ask (openssl, no nonce: the cached path) until the answer is revoked."""
    device = revoked.device

    def revoked_answer() -> OpensslAnswer | None:
        answer = openssl_ocsp(deployment, workdir, "-cert", device.pem, nonce=False)
        assert answer.verified, str(answer)
        return answer if answer.status(device.pem) == "revoked" else None

    deadline = revoked.returned + CHECK_INTERVAL + MARGIN
    first, _ = until(
        revoked_answer,
        timeout=deadline - time.monotonic(),
        what=f"{device.serial} revoked at {deployment.url}",
    )
    return Revocation(revoked, time.monotonic() - revoked.returned, first)


def assert_revoked_for_key_compromise(single: ocsp.OCSPResponse, revocation: Revocation) -> None:
    assert single.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert single.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert single.serial_number == revocation.device.certificate.serial_number
    assert single.revocation_reason is x509.ReasonFlags.key_compromise
    # OCSP times are whole seconds (RFC 5280 GeneralizedTime without fractions).
    assert single.revocation_time_utc == revocation.revoked_at.replace(microsecond=0)


# =========================================================================================
# scepline up
# =========================================================================================


@dataclass(frozen=True)
class Embedded:
    deployment: Deployment
    scep_url: str


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    data_dir = tmp_path_factory.mktemp("ocsp-up") / "var"
    # Debian's scepclient only speaks single DES, so this deployment allows it.
    with scepline_up(data_dir, scep_allow_des="true") as (scep_url, deployment):
        yield Embedded(deployment, scep_url)


@pytest.fixture(scope="module")
def device(up: Embedded, tmp_path_factory: pytest.TempPathFactory) -> Device:
    """Enrolled by scepclient; never revoked."""
    return enrol(up.scep_url, tmp_path_factory.mktemp("good-device"), "ocsp-good-device")


@pytest.fixture(scope="module")
def revocation(up: Embedded, tmp_path_factory: pytest.TempPathFactory) -> Revocation:
    """A device enrolled by scepclient, answered good, then revoked by the operator;
    returned once every serving process has seen the revocation."""
    workdir = tmp_path_factory.mktemp("revoked-device")
    revoked = enrol(up.scep_url, workdir / "enrol", "ocsp-revoked-device")
    before = openssl_ocsp(up.deployment, workdir, "-cert", revoked.pem, nonce=False)
    assert before.verified and before.status(revoked.pem) == "good", str(before)
    revocation = watch_revocation(up.deployment, revoke(up.deployment, revoked), workdir)
    revocation.revoked.settled()
    return revocation


class TestEmbedded:
    """``scepline up``: what OpenSSL, GnuTLS and strongSwan make of its answers."""

    def test_issued_certificates_name_the_responder_and_the_ca_certificate_in_their_aia(
        self, up: Embedded, device: Device
    ):
        access = device.certificate.extensions.get_extension_for_class(
            x509.AuthorityInformationAccess
        ).value
        urls = {
            description.access_method: description.access_location.value for description in access
        }
        assert urls[x509.AuthorityInformationAccessOID.OCSP] == up.deployment.url
        ca_issuers = httpx.get(urls[x509.AuthorityInformationAccessOID.CA_ISSUERS], timeout=10)
        assert ca_issuers.status_code == 200
        assert ca_issuers.headers["content-type"] == "application/pkix-cert"
        assert x509.load_der_x509_certificate(ca_issuers.content) == up.deployment.ca

    @pytest.mark.parametrize("digest", ["sha1", "sha256", "sha384", "sha512"])
    def test_openssl_posts_with_a_nonce_and_verifies_good_with_the_nonce_echoed(
        self, up: Embedded, device: Device, tmp_path: Path, digest: str
    ):
        answer = openssl_ocsp(up.deployment, tmp_path, "-cert", device.pem, digest=digest)

        assert answer.verified, str(answer)
        assert answer.status(device.pem) == "good", str(answer)
        assert "WARNING" not in answer.output  # e.g. "no nonce in response"
        response = answer.response
        assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
        assert response.serial_number == device.certificate.serial_number
        assert response.hash_algorithm.name == digest
        nonce = request_nonce(answer.request_der)
        assert nonce is not None and response_nonce(response) == nonce

    def test_answers_are_signed_by_the_delegated_responder_the_ca_certified(
        self, up: Embedded, device: Device, tmp_path: Path
    ):
        response = openssl_ocsp(up.deployment, tmp_path, "-cert", device.pem).response

        responder = up.deployment.responder
        assert response.certificates == [responder]
        assert response.responder_key_hash == (
            x509.SubjectKeyIdentifier.from_public_key(responder.public_key()).digest
        )
        assert response.signature_algorithm_oid == x509.SignatureAlgorithmOID.RSA_WITH_SHA256
        responder.verify_directly_issued_by(up.deployment.ca)
        usage = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usage) == [ExtendedKeyUsageOID.OCSP_SIGNING]
        responder.extensions.get_extension_for_class(x509.OCSPNoCheck)

    def test_openssl_without_a_nonce_verifies_good_and_gets_no_nonce(
        self, up: Embedded, device: Device, tmp_path: Path
    ):
        answer = openssl_ocsp(up.deployment, tmp_path, "-cert", device.pem, nonce=False)

        assert answer.verified, str(answer)
        assert answer.status(device.pem) == "good", str(answer)
        assert request_nonce(answer.request_der) is None
        assert response_nonce(answer.response) is None
        assert (
            answer.response.this_update_utc <= datetime.now(UTC) < answer.response.next_update_utc
        )

    def test_openssl_asks_about_three_certificates_in_one_request(
        self, up: Embedded, device: Device, revocation: Revocation, tmp_path: Path
    ):
        made_up = f"0x{uuid.uuid4().hex}"

        answer = openssl_ocsp(
            up.deployment,
            tmp_path,
            *("-cert", device.pem, "-cert", revocation.device.pem, "-serial", made_up),
        )

        assert answer.verified, str(answer)
        assert answer.status(device.pem) == "good", str(answer)
        assert answer.status(revocation.device.pem) == "revoked", str(answer)
        assert answer.status(made_up) == "unknown", str(answer)
        basic = asn1_ocsp.OCSPResponse.load(answer.response_der).basic_ocsp_response
        statuses = [
            (item["cert_id"]["serial_number"].native, item["cert_status"].name)
            for item in basic["tbs_response_data"]["responses"]
        ]
        assert statuses == [
            (device.certificate.serial_number, "good"),
            (revocation.device.certificate.serial_number, "revoked"),
            (int(made_up, 16), "unknown"),
        ]

    def test_a_request_openssl_signed_is_answered(
        self, up: Embedded, device: Device, tmp_path: Path
    ):
        """RFC 5019: responders need not check a request's signature, but must
        read a signed request."""
        answer = openssl_ocsp(
            up.deployment,
            tmp_path,
            *("-signer", device.pem, "-signkey", device.key, "-cert", device.pem),
        )

        assert answer.verified, str(answer)
        assert answer.status(device.pem) == "good", str(answer)
        assert asn1_ocsp.OCSPRequest.load(answer.request_der)["optional_signature"].native

    def test_openssl_configured_with_a_trailing_slash_on_the_url_is_answered(
        self, up: Embedded, device: Device, tmp_path: Path
    ):
        """``-url <base>/ocsp/``, as operators often write a responder's URL."""
        answer = openssl_ocsp(
            up.deployment, tmp_path, "-cert", device.pem, url=up.deployment.url + "/"
        )

        assert answer.verified, str(answer)
        assert answer.status(device.pem) == "good", str(answer)

    def test_the_ca_certificate_itself_is_good(self, up: Embedded, tmp_path: Path):
        answer = openssl_ocsp(up.deployment, tmp_path, "-cert", up.deployment.ca_pem)

        assert answer.verified, str(answer)
        assert answer.status(up.deployment.ca_pem) == "good", str(answer)
        assert answer.response.serial_number == up.deployment.ca.serial_number

    def test_a_serial_the_ca_never_issued_is_unknown(self, up: Embedded, tmp_path: Path):
        made_up = f"0x{uuid.uuid4().hex}"

        answer = openssl_ocsp(up.deployment, tmp_path, "-serial", made_up)

        assert answer.verified, str(answer)
        assert answer.status(made_up) == "unknown", str(answer)
        assert answer.response.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
        assert answer.response.serial_number == int(made_up, 16)

    def test_a_get_of_an_openssl_request_is_answered_with_caching_headers(
        self, up: Embedded, device: Device, tmp_path: Path
    ):
        request = openssl_request(up.deployment, tmp_path, device.pem, nonce=False)

        fetched = httpx.get(get_url(up.deployment, request.read_bytes()), timeout=30)

        response = answered(fetched)
        assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
        checked = openssl_check(up.deployment, tmp_path, fetched.content, device.pem)
        assert checked.verified and checked.status == "good", str(checked)
        # RFC 5019 6.2: a cache or CDN may keep the answer until its nextUpdate.
        cache_control = {part.strip() for part in fetched.headers["cache-control"].split(",")}
        max_age = int(next(p for p in cache_control if p.startswith("max-age=")).split("=")[1])
        assert {"public", "no-transform", "must-revalidate"} <= cache_control
        assert 0 < max_age <= (response.next_update_utc - response.this_update_utc).total_seconds()
        assert email.utils.parsedate_to_datetime(fetched.headers["last-modified"]) == (
            response.this_update_utc
        )
        assert email.utils.parsedate_to_datetime(fetched.headers["expires"]) == (
            response.next_update_utc
        )
        assert re.fullmatch(r'"[0-9a-f]+"', fetched.headers["etag"])

    def test_a_get_with_a_nonce_is_answered_with_it_and_not_for_caches(
        self, up: Embedded, device: Device, tmp_path: Path
    ):
        request = openssl_request(up.deployment, tmp_path, device.pem, nonce=True)

        fetched = httpx.get(get_url(up.deployment, request.read_bytes()), timeout=30)

        response = answered(fetched)
        assert response_nonce(response) == request_nonce(request.read_bytes())
        assert fetched.headers["cache-control"] == "no-store"
        assert "etag" not in fetched.headers
        # -reqin: openssl checks the nonce it sent came back.
        checked = openssl_check(up.deployment, tmp_path, fetched.content, device.pem, request)
        assert checked.verified and checked.status == "good", str(checked)
        assert "WARNING" not in checked.done.stderr

    def test_a_revocation_is_answered_within_the_check_interval_with_its_time_and_reason(
        self, up: Embedded, revocation: Revocation, tmp_path: Path
    ):
        assert revocation.seconds <= CHECK_INTERVAL + MARGIN
        first = revocation.first
        assert "Reason: keyCompromise" in first.output, str(first)
        assert_revoked_for_key_compromise(first.response, revocation)
        # Every serving process of `scepline up` (each caches): with or without a nonce.
        for nonce in (False, True, False, True, False, True):
            again = openssl_ocsp(
                up.deployment, tmp_path, "-cert", revocation.device.pem, nonce=nonce
            )
            assert again.verified, str(again)
            assert_revoked_for_key_compromise(again.response, revocation)

    def test_gnutls_ocsptool_verifies_the_responder_chain_and_reads_good(
        self, up: Embedded, device: Device, tmp_path: Path
    ):
        done, answer = ocsptool_ask(
            up.deployment,
            tmp_path,
            device.pem,
            trust=up.deployment.ca_pem,
            url=up.deployment.url,
            nonce=True,
        )

        assert done.returncode == 0, done.stdout + done.stderr
        assert "Certificate Status: good" in done.stdout
        assert "Verifying OCSP Response: Success." in done.stdout
        response = ocsp.load_der_ocsp_response(answer.read_bytes())
        assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
        assert response_nonce(response) is not None

    def test_gnutls_ocsptool_refuses_the_answer_under_another_trust_anchor(
        self, up: Embedded, device: Device, tmp_path: Path
    ):
        """The check above is not vacuous: ocsptool does verify the signer chain."""
        done, _ = ocsptool_ask(up.deployment, tmp_path, device.pem, trust=device.pem)

        assert done.returncode != 0
        assert "Verifying OCSP Response: Failure" in done.stdout + done.stderr

    def test_gnutls_ocsptool_asks_the_responder_named_in_the_aia_and_reads_revoked(
        self, up: Embedded, revocation: Revocation, tmp_path: Path
    ):
        done, answer = ocsptool_ask(
            up.deployment, tmp_path, revocation.device.pem, trust=up.deployment.ca_pem
        )

        assert done.returncode == 0, done.stdout + done.stderr
        assert "Certificate Status: revoked" in done.stdout
        assert "Verifying OCSP Response: Success." in done.stdout
        assert_revoked_for_key_compromise(
            ocsp.load_der_ocsp_response(answer.read_bytes()), revocation
        )

    def test_strongswan_pki_verify_online_asks_the_aia_responder_and_trusts_good(
        self, up: Embedded, device: Device
    ):
        done = pki_verify_online(up.deployment, device.pem)

        assert done.returncode == 0, done.stdout
        assert f"requesting ocsp status from '{up.deployment.url}'" in done.stdout
        assert 'ocsp response correctly signed by "CN=scepline lab CA OCSP responder"' in (
            done.stdout
        )
        assert "certificate status is good" in done.stdout
        assert "certificate trusted, lifetimes valid, certificate not revoked" in done.stdout

    def test_strongswan_pki_verify_online_reads_the_revocation_and_its_reason(
        self, up: Embedded, revocation: Revocation
    ):
        done = pki_verify_online(up.deployment, revocation.device.pem)

        assert done.returncode != 0, done.stdout
        assert 'ocsp response correctly signed by "CN=scepline lab CA OCSP responder"' in (
            done.stdout
        )
        revoked_on = revocation.revoked_at.strftime("%b %d %H:%M:%S UTC %Y")
        assert f"certificate was revoked on {revoked_on}, reason: key compromise" in done.stdout
        assert "certificate untrusted" in done.stdout

    @pytest.mark.parametrize("method", ["POST", "GET"])
    def test_an_http_1_0_request_without_host_gets_an_answer_openssl_verifies(
        self, up: Embedded, device: Device, tmp_path: Path, method: str
    ):
        der = openssl_request(up.deployment, tmp_path, device.pem, nonce=False).read_bytes()
        if method == "POST":
            message = (
                b"POST /ocsp HTTP/1.0\r\nContent-Type: application/ocsp-request\r\n"
                b"Content-Length: %d\r\n\r\n" % len(der) + der
            )
        else:
            path = urllib.parse.quote(base64.b64encode(der).decode(), safe="")
            message = f"GET /ocsp/{path} HTTP/1.0\r\n\r\n".encode()

        status, headers, body = raw_http(up.deployment.port, message)

        assert status.split()[1] == "200", status
        assert headers["content-type"] == OCSP_RESPONSE
        assert int(headers["content-length"]) == len(body)
        checked = openssl_check(up.deployment, tmp_path, body, device.pem)
        assert checked.verified and checked.status == "good", str(checked)


# -- scepline ocsp alone ------------------------------------------------------------------


class TestScepOcspAlone:
    """``scepline ocsp``: the responder alone, on a deployment's store and CA directory."""

    def test_beside_scepline_up_it_is_ready_and_answers_from_the_same_store(
        self, up: Embedded, device: Device, tmp_path: Path
    ):
        """``scepline ocsp`` on up's SQLite store and CA directory: its /readyz
        says 200 (a load balancer sends it traffic) and it answers as up does."""
        with scepline_ocsp(up.deployment.env, tmp_path) as (url, process):
            ready = httpx.get(url.removesuffix("/ocsp") + "/readyz", timeout=10)
            answer = openssl_ocsp(up.deployment, tmp_path, "-cert", device.pem, url=url)

        assert ready.status_code == 200, process.log[-2000:]
        assert answer.verified and answer.status(device.pem) == "good", str(answer)
        assert answer.response.certificates == [up.deployment.responder]

    def test_it_answers_try_later_until_a_signer_issued_its_certificate_then_without_restart(
        self, tmp_path: Path, lab_ca_dir: Path
    ):
        data_dir = data_dir_with_ca(tmp_path, lab_ca_dir)  # a CA, no responder certificate yet
        env = settings_env(data_dir, {"crl_check_interval_seconds": str(CHECK_INTERVAL)})
        store = run_scepline(env, "db", "upgrade")
        assert store.returncode == 0, store.stdout + store.stderr
        with scepline_ocsp(env, tmp_path) as (url, process):
            alone = Deployment(url, data_dir, env, process)
            request = request_for(alone.ca, alone.ca.serial_number)
            waiting = post(alone, request)
            assert answered(waiting).response_status is ocsp.OCSPResponseStatus.TRY_LATER
            assert waiting.headers["cache-control"] == "no-store"

            # `scepline up`'s signer issues the responder certificate when it starts.
            with run_scepline_up(data_dir, static_challenge=CHALLENGE):

                def successful() -> ocsp.OCSPResponse | None:
                    response = answered(post(alone, request))
                    if response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL:
                        return response
                    assert response.response_status is ocsp.OCSPResponseStatus.TRY_LATER
                    return None

                response, _ = until(successful, timeout=30, what="the responder certificate read")

        assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
        assert response.certificates == [alone.responder]


# -- what no client should send ----------------------------------------------------------


@pytest.fixture(scope="module")
def staged_ca(up: Embedded) -> x509.Certificate:
    """A second CA of ours: ``scepline ca rollover`` stages generation 1 (taking
    over in 30 days); the signer issues its responder within a check interval
    and the responders read it within seconds (tryLater until then)."""
    done = up.deployment.scepline("ca", "rollover", "--switch-in-days", "30")
    assert done.returncode == 0, done.stdout + done.stderr
    staged = x509.load_pem_x509_certificate(
        (up.deployment.data_dir / "ca" / "next" / "1" / "ca.crt").read_bytes()
    )
    assert staged.public_key() != up.deployment.ca.public_key()
    request = request_for(staged, staged.serial_number)

    def successful() -> ocsp.OCSPResponse | None:
        response = answered(post(up.deployment, request))
        return response if response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL else None

    until(successful, timeout=30, what="the staged CA answered")
    # That was one serving process; each reads the CA directory again on its own.
    time.sleep(DIRECTORY_RECHECK + 0.5)
    return staged


class TestBadInputs:
    """Requests no real client sends get an OCSP error status in an HTTP 200 (or
    a 4xx for a wrong content type), never a 5xx."""

    def test_a_truncated_request_is_malformed(self, up: Embedded, device: Device):
        der = request_for(up.deployment.ca, device.certificate.serial_number)

        for cut in (1, len(der) // 2, len(der) - 1):
            response = answered(post(up.deployment, der[:cut]))
            assert response.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST

    def test_an_empty_post_is_malformed(self, up: Embedded):
        response = answered(post(up.deployment, b""))

        assert response.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST

    def test_a_post_without_a_content_type_is_answered(self, up: Embedded, device: Device):
        der = request_for(up.deployment.ca, device.certificate.serial_number)

        response = answered(httpx.post(up.deployment.url, content=der, timeout=30))

        assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        assert response.certificate_status is ocsp.OCSPCertStatus.GOOD

    @pytest.mark.parametrize(
        "content_type", ["application/x-www-form-urlencoded", "text/plain", "application/ocsp"]
    )
    def test_a_post_with_another_content_type_gets_400(
        self, up: Embedded, device: Device, content_type: str
    ):
        der = request_for(up.deployment.ca, device.certificate.serial_number)

        refused = post(up.deployment, der, **{"Content-Type": content_type})

        assert refused.status_code == 400
        assert OCSP_REQUEST in refused.text

    def test_a_request_over_the_size_limit_is_malformed_one_under_it_answered(
        self, up: Embedded, device: Device
    ):
        """Padded by a request extension responders ignore: only the size differs."""
        der = request_for(up.deployment.ca, device.certificate.serial_number)
        private = "1.3.6.1.4.1.55555.1"  # an extension nobody knows: ignored

        def padded(total: int) -> bytes:
            size = total - len(der)
            while (
                len(grown := with_extension(der, private, core.OctetString(b"p" * size).dump()))
                > total
            ):
                size -= 1
            assert len(grown) == total
            return grown

        within = answered(post(up.deployment, padded(MAX_REQUEST_BYTES)))
        over = answered(post(up.deployment, padded(MAX_REQUEST_BYTES + 1)))

        assert within.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        assert within.certificate_status is ocsp.OCSPCertStatus.GOOD
        assert over.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST

    def test_an_oversized_body_sent_without_a_length_is_malformed(self, up: Embedded):
        def chunks() -> Iterator[bytes]:
            yield from itertools.repeat(b"\x30" * 4096, 64)  # 256 KiB, chunked

        response = answered(
            httpx.post(up.deployment.url, content=chunks(), headers={"Content-Type": OCSP_REQUEST})
        )

        assert response.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST

    @pytest.mark.parametrize("algorithm", ["md5", "1.2.3.4.5"])
    def test_a_certid_hash_algorithm_we_do_not_answer_is_malformed(
        self, up: Embedded, device: Device, algorithm: str
    ):
        def rehash(tbs: asn1_ocsp.TBSRequest) -> None:
            tbs["request_list"][0]["req_cert"]["hash_algorithm"] = {"algorithm": algorithm}

        der = edited(request_for(up.deployment.ca, device.certificate.serial_number), rehash)

        response = answered(post(up.deployment, der))

        assert response.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST

    @pytest.mark.parametrize("name", ["someone else's CA", "scepline lab CA"])
    def test_a_ca_that_is_not_ours_is_unauthorized_alone_or_beside_ours(
        self, up: Embedded, device: Device, name: str
    ):
        """Even under our CA's name: the key hash tells."""
        foreign = request_for(self_signed(rsa_key("ocsp-foreign-ca"), name), 1234)
        ours = request_for(up.deployment.ca, device.certificate.serial_number)

        def beside_ours(tbs: asn1_ocsp.TBSRequest) -> None:
            theirs = asn1_ocsp.OCSPRequest.load(foreign)["tbs_request"]["request_list"][0]
            tbs["request_list"] = [tbs["request_list"][0].copy(), theirs.copy()]

        alone = answered(post(up.deployment, foreign))
        mixed = answered(post(up.deployment, edited(ours, beside_ours)))

        assert alone.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED
        assert mixed.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED

    @pytest.mark.parametrize("path", ["not*base64!", "", "%ZZ", "MA"])
    def test_a_get_path_that_is_not_a_base64_request_is_malformed(self, up: Embedded, path: str):
        response = answered(httpx.get(f"{up.deployment.url}/{path}", timeout=30))

        assert response.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST

    @pytest.mark.parametrize("octets", [0, 129])
    def test_a_nonce_of_no_or_more_than_128_octets_is_malformed(
        self, up: Embedded, device: Device, octets: int
    ):
        der = with_nonce(
            request_for(up.deployment.ca, device.certificate.serial_number), b"n" * octets
        )

        response = answered(post(up.deployment, der))

        assert response.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST

    def test_a_nonce_of_128_octets_is_echoed(self, up: Embedded, device: Device):
        nonce = os.urandom(128)
        der = with_nonce(request_for(up.deployment.ca, device.certificate.serial_number), nonce)

        response = answered(post(up.deployment, der))

        assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        assert response_nonce(response) == nonce

    def test_a_get_works_with_slashes_escaped_as_2f_and_left_raw(
        self, up: Embedded, device: Device
    ):
        plain = request_for(up.deployment.ca, device.certificate.serial_number)
        # A nonce that puts "/" (and "+") into the base64.
        der = next(
            candidate
            for candidate in (with_nonce(plain, os.urandom(16)) for _ in range(1000))
            if {"/", "+"} <= set(base64.b64encode(candidate).decode())
        )
        escaped = get_url(up.deployment, der, escape_slashes=True)
        raw = get_url(up.deployment, der, escape_slashes=False)
        assert "%2F" in escaped and "/" in raw.removeprefix(up.deployment.url + "/")

        for url in (escaped, raw):
            fetched = httpx.get(url, timeout=30)
            assert fetched.request.url.raw_path.decode() == url.removeprefix(up.deployment.base)
            response = answered(fetched)
            assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
            assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
            assert single_serial(response) == device.certificate.serial_number
            assert response_nonce(response) == request_nonce(der)

    def test_a_get_built_on_a_url_with_a_trailing_slash_is_answered(
        self, up: Embedded, device: Device
    ):
        """RFC 5019 clients append "/<base64>" to the URL they were given: given
        <base>/ocsp/, that makes a double slash."""
        der = request_for(up.deployment.ca, device.certificate.serial_number)
        url = f"{up.deployment.url}//{urllib.parse.quote(base64.b64encode(der).decode(), safe='')}"

        response = answered(httpx.get(url, timeout=30))

        assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        assert response.certificate_status is ocsp.OCSPCertStatus.GOOD

    def test_a_get_revalidated_with_its_etag_gets_304(self, up: Embedded, device: Device):
        url = get_url(
            up.deployment, request_for(up.deployment.ca, device.certificate.serial_number)
        )

        # One kept-alive connection, so one serving process: each caches (and tags) its own.
        with httpx.Client(timeout=30) as client:
            first = client.get(url)
            etag = first.headers["etag"]
            same = client.get(url, headers={"If-None-Match": etag})
            among = client.get(url, headers={"If-None-Match": f'"elsewhere", {etag}'})
            other = client.get(url, headers={"If-None-Match": '"some-other-answer"'})

        assert answered(first).certificate_status is ocsp.OCSPCertStatus.GOOD
        for revalidated in (same, among):
            assert revalidated.status_code == 304
            assert revalidated.content == b""
            assert revalidated.headers["etag"] == etag
            assert "max-age=" in revalidated.headers["cache-control"]
        assert answered(other).certificate_status is ocsp.OCSPCertStatus.GOOD

    def test_certids_naming_two_of_our_cas_in_one_request_are_unauthorized(
        self, up: Embedded, device: Device, staged_ca: x509.Certificate
    ):
        """One response has one signer: a request must name CAs with one responder."""
        ours = request_for(up.deployment.ca, device.certificate.serial_number)
        staged = request_for(staged_ca, staged_ca.serial_number)

        def both(tbs: asn1_ocsp.TBSRequest) -> None:
            extra = asn1_ocsp.OCSPRequest.load(staged)["tbs_request"]["request_list"][0]
            tbs["request_list"] = [tbs["request_list"][0].copy(), extra.copy()]

        alone = [answered(post(up.deployment, der)) for der in (ours, staged)]
        together = answered(post(up.deployment, edited(ours, both)))

        assert [a.response_status for a in alone] == [ocsp.OCSPResponseStatus.SUCCESSFUL] * 2
        assert [a.certificate_status for a in alone] == [ocsp.OCSPCertStatus.GOOD] * 2
        assert together.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED


# =========================================================================================
# The pipeline on RabbitMQ and PostgreSQL, and `scepline ocsp` beside it
# =========================================================================================


@dataclass(frozen=True)
class Pipeline:
    scep_url: str  # an ingress replica's /scep
    ingress: Deployment  # OCSP on that replica's SCEP port (the public base URL)
    standalone: Deployment  # `scepline ocsp` on the same store and CA directory


@pytest.fixture(scope="class")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory, rabbitmq_url: str, postgres_admin_dsn: str
) -> Iterator[Pipeline]:
    base = tmp_path_factory.mktemp("ocsp-pipeline")
    settings = {
        "static_challenge": CHALLENGE,
        "scep_allow_des": "true",
        "crl_check_interval_seconds": str(CHECK_INTERVAL),
    }
    with (
        scepline_cluster(
            base,
            rabbitmq_url=rabbitmq_url,
            postgres_admin_dsn=postgres_admin_dsn,
            settings=settings,
            ingress_sync_wait={"ingress": "20"},
            public_ingress="ingress",
        ) as info,
        scepline_ocsp(info.env, base) as (standalone_url, standalone),
    ):
        ingress = Deployment(
            f"{info.env['SCEPLINE_PUBLIC_BASE_URL']}/ocsp",
            info.data_dir,
            info.env,
            info.ingress["ingress"],
        )
        alone = dataclasses.replace(ingress, url=standalone_url, process=standalone)
        for deployment in (ingress, alone):
            answering(deployment)
        yield Pipeline(info.urls["ingress"], ingress, alone)


@pytest.mark.postgres
@pytest.mark.rabbitmq
class TestPipeline:
    """Ingress and ``scepline ocsp`` answer from PostgreSQL what the signer issued."""

    def test_openssl_reads_good_then_revoked_then_unknown_from_ingress_and_scepline_ocsp(
        self, pipeline: Pipeline, tmp_path: Path
    ):
        device = enrol(pipeline.scep_url, tmp_path / "enrol", "ocsp-pipeline-device")
        access = device.certificate.extensions.get_extension_for_class(
            x509.AuthorityInformationAccess
        ).value
        assert access[0].access_location.value == pipeline.ingress.url
        responders = (pipeline.ingress, pipeline.standalone)

        for responder in responders:
            good = openssl_ocsp(responder, tmp_path, "-cert", device.pem, nonce=False)
            assert good.verified and good.status(device.pem) == "good", str(good)

        revoked = revoke(pipeline.ingress, device)
        for responder in responders:
            revocation = watch_revocation(responder, revoked, tmp_path)
            assert revocation.seconds <= CHECK_INTERVAL + MARGIN
            assert "Reason: keyCompromise" in revocation.first.output
            assert_revoked_for_key_compromise(revocation.first.response, revocation)
        revoked.settled()
        for responder, nonce in itertools.product(responders, (False, True)):
            again = openssl_ocsp(responder, tmp_path, "-cert", device.pem, nonce=nonce)
            assert again.verified, str(again)
            assert_revoked_for_key_compromise(again.response, revocation)

        made_up = f"0x{uuid.uuid4().hex}"
        for responder in responders:
            unknown = openssl_ocsp(responder, tmp_path, "-serial", made_up)
            assert unknown.verified and unknown.status(made_up) == "unknown", str(unknown)

    def test_gnutls_ocsptool_verifies_an_answer_from_the_responder_in_the_aia(
        self, pipeline: Pipeline, tmp_path: Path
    ):
        device = enrol(pipeline.scep_url, tmp_path / "enrol", "ocsp-pipeline-ocsptool")

        done, answer = ocsptool_ask(
            pipeline.ingress, tmp_path, device.pem, trust=pipeline.ingress.ca_pem
        )

        assert done.returncode == 0, done.stdout + done.stderr
        assert "Certificate Status: good" in done.stdout
        assert "Verifying OCSP Response: Success." in done.stdout
        response = ocsp.load_der_ocsp_response(answer.read_bytes())
        assert response.serial_number == device.certificate.serial_number
        assert response.certificates == [pipeline.ingress.responder]


# =========================================================================================
# The responder key in a SoftHSM2 token
# =========================================================================================


@dataclass(frozen=True)
class Hsm:
    deployment: Deployment
    scep_url: str
    ocsp_label: str  # CKA_LABEL of the responder key generation 0's signer made


@pytest.fixture(scope="class")
def hsm(
    tmp_path_factory: pytest.TempPathFactory,
    softhsm_config: Pkcs11Config,  # sets SOFTHSM2_CONF, which every process inherits
) -> Iterator[Hsm]:
    """``scepline up`` whose CA is EC: the responder key the signer makes in the
    token is P-256 too, so answers are ECDSA signatures from PKCS#11."""
    base = tmp_path_factory.mktemp("ocsp-hsm")
    pin_file = base / "token.pin"
    descriptor = os.open(pin_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(softhsm_config.pin + "\n")
    tag = uuid.uuid4().hex[:10]  # one token per pytest run: labels of our own
    settings = {
        "key_backend": "pkcs11",
        "pkcs11_module": softhsm_config.module,
        "pkcs11_token_label": softhsm_config.token_label,
        "pkcs11_pin_file": str(pin_file),
        "pkcs11_ca_key_label": f"ocsp-test-ca-{tag}",
        "pkcs11_ra_key_label": f"ocsp-test-ra-{tag}",
        "pkcs11_ocsp_key_label": f"ocsp-test-responder-{tag}",
        "ca_key_type": "ec",
    }
    with scepline_up(base / "var", **settings) as (scep_url, deployment):
        yield Hsm(deployment, scep_url, settings["pkcs11_ocsp_key_label"])


@pytest.fixture(scope="class")
def hsm_device(hsm: Hsm, tmp_path_factory: pytest.TempPathFactory) -> Device:
    # strongSwan (AES): micromdm scepclient cannot enrol under an EC CA.
    return enrolled(
        enrol_strongswan(
            hsm.scep_url, tmp_path_factory.mktemp("hsm-device"), challenge=CHALLENGE, dn="CN=hsm"
        )
    )


class TestSoftHsm:
    """``SCEPLINE_KEY_BACKEND=pkcs11``: the responder key is made in the token."""

    def test_the_responder_key_is_made_in_the_token_and_never_written_to_disk(
        self, hsm: Hsm, softhsm_token: Pkcs11Token
    ):
        ca_dir = hsm.deployment.data_dir / "ca"
        index = json.loads((ca_dir / "keys.json").read_text())

        assert index["ocsp"]["pkcs11_label"] == hsm.ocsp_label
        assert not (ca_dir / "ocsp.key").exists()
        assert (ca_dir / "ocsp.crt").exists()
        in_token = private_key_attributes(softhsm_token, hsm.ocsp_label)
        assert index["ocsp"]["pkcs11_id"] == in_token["id"].hex()  # type: ignore[union-attr]
        assert_never_leaves_the_token(in_token)

    def test_openssl_verifies_the_ecdsa_answers_the_token_key_signed(
        self, hsm: Hsm, hsm_device: Device, tmp_path: Path
    ):
        good = openssl_ocsp(hsm.deployment, tmp_path, "-cert", hsm_device.pem)
        ca_itself = openssl_ocsp(hsm.deployment, tmp_path, "-cert", hsm.deployment.ca_pem)
        unknown = openssl_ocsp(hsm.deployment, tmp_path, "-serial", "0x5ca1ab1e")

        assert good.verified and good.status(hsm_device.pem) == "good", str(good)
        assert ca_itself.verified, str(ca_itself)
        assert ca_itself.status(hsm.deployment.ca_pem) == "good", str(ca_itself)
        assert unknown.verified and unknown.status("0x5ca1ab1e") == "unknown", str(unknown)
        response = good.response
        assert response.certificates == [hsm.deployment.responder]
        assert isinstance(hsm.deployment.responder.public_key(), ec.EllipticCurvePublicKey)
        assert response.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256
        assert response_nonce(response) == request_nonce(good.request_der)

    def test_gnutls_and_strongswan_verify_them_too(
        self, hsm: Hsm, hsm_device: Device, tmp_path: Path
    ):
        asked, _ = ocsptool_ask(
            hsm.deployment, tmp_path, hsm_device.pem, trust=hsm.deployment.ca_pem
        )
        verified = pki_verify_online(hsm.deployment, hsm_device.pem)

        assert asked.returncode == 0, asked.stdout + asked.stderr
        assert "Signature Algorithm: ECDSA-SHA256" in asked.stdout
        assert "Certificate Status: good" in asked.stdout
        assert "Verifying OCSP Response: Success." in asked.stdout
        assert verified.returncode == 0, verified.stdout
        assert "ocsp response correctly signed by" in verified.stdout
        assert "certificate status is good" in verified.stdout

    def test_ca_journal_check_reconciles_and_lists_the_responder_certificate(self, hsm: Hsm):
        journal = hsm.deployment.scepline("ca", "journal", "--check")

        assert journal.returncode == 0, journal.stdout + journal.stderr
        responder = f"{hsm.deployment.responder.serial_number:x}"
        entries = [line.split() for line in journal.stdout.splitlines() if not line.startswith("#")]
        # time, kind, serial, status, issuer key id, transaction, subject
        assert [entry[1:4] for entry in entries if entry[1] == "ocsp-certificate"] == [
            ["ocsp-certificate", responder, "in-use"]
        ]
        assert "# 1 ocsp-certificate in-use" in journal.stdout
        assert "# journal reconciles" in journal.stdout

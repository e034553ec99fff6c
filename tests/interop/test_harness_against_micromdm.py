"""Prove the interop harness against micromdm ``scepserver`` 2.1.0, a stand-in server.

A module-scoped fixture initialises a micromdm CA depot in a temporary directory and
starts ``scepserver`` on a free port. scepserver 2.1.0 has no listen-address flag and binds
all interfaces, so the tests send traffic only to 127.0.0.1. Each client then enrols
through :mod:`tests.interop.clients`, most of them through a
:class:`~tests.interop.capture_proxy.CaptureProxy`, so the tests can also check what went
over the wire.

Expected failures are the clients' or micromdm's faults, not the harness's. They are
``xfail(strict=True, raises=KnownClientBug)``. A test raises :class:`KnownClientBug` only
after it has seen the exact error line it expects, so a failure for any other reason
still fails the test.
"""

from __future__ import annotations

import base64
import datetime
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from tests.interop.capture_proxy import CaptureProxy, decode_get_message, parse_raw_query
from tests.interop.clients import (
    CERTMONGER,
    SCEPCLIENT,
    STRONGSWAN,
    TIMED_OUT,
    EnrolResult,
    classify_ca_certs,
    enrol_certmonger,
    enrol_scepclient,
    enrol_strongswan,
    fetch_ca_certs_strongswan,
    load_certificate,
)

_TOOLS = ("scepserver", "scepclient", "pki", "getcert", "dbus-run-session")
pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in _TOOLS),
        reason="needs the Debian packages scep, strongswan-pki, certmonger and dbus",
    ),
]

CHALLENGE = "interop-secret"

# SCEP signed attributes (RFC 8894 §3.2.1).
OID_MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
OID_TRANSACTION_ID = "2.16.840.1.113733.1.9.7"
OID_SENDER_NONCE = "2.16.840.1.113733.1.9.5"
PKCSREQ, RENEWALREQ = "19", "17"


class KnownClientBug(Exception):
    """Raised once a test has seen the exact, documented failure it expects."""


@dataclass(frozen=True)
class Micromdm:
    url: str
    depot: Path
    ca_pem: Path
    ca: x509.Certificate
    log: Path


def _free_port() -> int:
    # scepserver binds every interface, so the port must be free on all of them.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def micromdm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Micromdm]:
    base = tmp_path_factory.mktemp("micromdm")
    subprocess.run(
        ["scepserver", "ca", "-init", "-depot", "depot", "-keySize", "2048"],
        cwd=base,
        check=True,
        capture_output=True,
        timeout=60,
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}/scep"
    log = base / "scepserver.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            # -allowrenew 0: let clients renew (and re-enrol a DN) at any time.
            [
                *("scepserver", "-depot", "depot", "-port", str(port)),
                *("-challenge", CHALLENGE, "-allowrenew", "0", "-debug"),
            ],
            cwd=base,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"{url}?operation=GetCACaps", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"scepserver did not come up:\n{log.read_text()}")
            time.sleep(0.05)
        ca_pem = base / "depot" / "ca.pem"
        ca = x509.load_pem_x509_certificate(ca_pem.read_bytes())
        yield Micromdm(url=url, depot=base / "depot", ca_pem=ca_pem, ca=ca, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def _diag(result: EnrolResult) -> str:
    return (
        f"{result.client} exit {result.returncode} in {result.workdir}\n"
        f"--- stdout ---\n{result.stdout[-6000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
    )


def _signed_attrs(der: bytes) -> dict[str, object]:
    """The SCEP pkiMessage's signed attributes, by dotted OID, as native values."""
    info = cms.ContentInfo.load(der)
    assert info["content_type"].native == "signed_data"
    signer = info["content"]["signer_infos"][0]
    attrs: dict[str, object] = {}
    for attr in signer["signed_attrs"]:
        value = attr["values"][0]
        attrs[attr["type"].dotted] = (
            value.parsed.native if hasattr(value, "parsed") else value.native
        )
    return attrs


def _envelope_cipher(der: bytes) -> str:
    signed = cms.ContentInfo.load(der)["content"]
    envelope = cms.ContentInfo.load(signed["encap_content_info"]["content"].native)
    info = envelope["content"]["encrypted_content_info"]
    return str(info["content_encryption_algorithm"]["algorithm"].native)


def _assert_issued(result: EnrolResult, ca: x509.Certificate, cn: str) -> x509.Certificate:
    assert result.ok, _diag(result)
    cert = result.certificate
    assert cert is not None
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
    cert.verify_directly_issued_by(ca)
    key = serialization.load_pem_private_key(result.key_path.read_bytes(), password=None)
    assert cert.public_key() == key.public_key()
    return cert


def _processes_under(path: Path) -> list[str]:
    """Live processes whose cwd or command line is inside ``path`` (stray daemons)."""
    found = []
    root = str(path.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = str((entry / "cwd").resolve())
        except (OSError, RuntimeError):
            continue
        if root in cmdline or cwd.startswith(root):
            found.append(f"{entry.name}: {cmdline}")
    return found


# ---------------------------------------------------------------------------------------
# micromdm scepclient
# ---------------------------------------------------------------------------------------


def test_scepclient_enrols(micromdm: Micromdm, tmp_path: Path) -> None:
    result = enrol_scepclient(micromdm.url, tmp_path / "c", challenge=CHALLENGE, cn="sc-enrol")
    assert result.client == SCEPCLIENT
    _assert_issued(result, micromdm.ca, "sc-enrol")
    assert result.workdir == (tmp_path / "c").resolve()


def test_scepclient_wrong_challenge_fails(micromdm: Micromdm, tmp_path: Path) -> None:
    result = enrol_scepclient(micromdm.url, tmp_path / "c", challenge="wrong", cn="sc-bad")
    assert not result.ok
    assert result.returncode != 0
    assert result.certificate is None


def test_capture_proxy_records_scepclient_pkcsreq(micromdm: Micromdm, tmp_path: Path) -> None:
    with CaptureProxy(micromdm.url, tmp_path / "wire", save_responses=True) as proxy:
        assert proxy.url.startswith("http://127.0.0.1:") and proxy.url.endswith("/scep")
        result = enrol_scepclient(proxy.url, tmp_path / "c", challenge=CHALLENGE, cn="sc-wire")
    _assert_issued(result, micromdm.ca, "sc-wire")

    ops = [(e.method, e.operation) for e in proxy.exchanges]
    assert ops == [("GET", "GetCACert"), ("GET", "GetCACaps"), ("POST", "PKIOperation")]
    assert all(e.status == 200 for e in proxy.exchanges)
    (der_file,) = proxy.captured
    assert der_file.name == "0003-post-pkioperation.der"
    assert (tmp_path / "wire" / "0003-post-pkioperation-response.der").stat().st_size > 0

    der = der_file.read_bytes()
    attrs = _signed_attrs(der)
    assert attrs[OID_MESSAGE_TYPE] == PKCSREQ
    assert isinstance(attrs[OID_TRANSACTION_ID], str) and attrs[OID_TRANSACTION_ID]
    assert len(attrs[OID_SENDER_NONCE]) == 16  # type: ignore[arg-type]
    # Debian's micromdm 2.1.0 client encrypts with single DES whatever the server says.
    assert _envelope_cipher(der) == "des"


def test_scepclient_renews_with_renewalreq(micromdm: Micromdm, tmp_path: Path) -> None:
    first = enrol_scepclient(micromdm.url, tmp_path / "c1", challenge=CHALLENGE, cn="sc-renew")
    old = _assert_issued(first, micromdm.ca, "sc-renew")
    assert first.certificate is not None
    old_cert = tmp_path / "old.pem"
    old_cert.write_bytes(first.certificate.public_bytes(serialization.Encoding.PEM))

    with CaptureProxy(micromdm.url, tmp_path / "wire") as proxy:
        renewed = enrol_scepclient(
            proxy.url,
            tmp_path / "c2",
            challenge=CHALLENGE,
            cn="sc-renew",
            renew_cert=old_cert,
            renew_key=first.key_path,
        )
    new = _assert_issued(renewed, micromdm.ca, "sc-renew")
    assert new.serial_number != old.serial_number
    assert new.public_key() == old.public_key()  # scepclient renews with the same key
    (der_file,) = proxy.captured
    assert _signed_attrs(der_file.read_bytes())[OID_MESSAGE_TYPE] == RENEWALREQ


# ---------------------------------------------------------------------------------------
# capture proxy unit checks (no external tools)
# ---------------------------------------------------------------------------------------


def test_decode_get_message_is_plus_safe() -> None:
    der = bytes(range(256)) * 3  # base64 of this contains '+' and '/'
    b64 = base64.b64encode(der).decode()
    assert "+" in b64 and "/" in b64
    raw_unescaped = b64  # macOS style: '+' and '/' sent as-is
    percent = b64.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
    # sscep/strongSwan style: base64 with a line break every 64 characters, then escaped.
    lines = "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    wrapped = lines.replace("+", "%2B").replace("/", "%2F").replace("\n", "%0A")
    unpadded = b64.rstrip("=")
    for raw in (raw_unescaped, percent, wrapped, unpadded):
        assert decode_get_message(raw) == der
    assert parse_raw_query("operation=PKIOperation&message=a+b%2B") == [
        ("operation", "PKIOperation"),
        ("message", "a+b%2B"),
    ]
    with pytest.raises(ValueError, match="not base64"):
        decode_get_message("%%%not-base64!")


# ---------------------------------------------------------------------------------------
# strongSwan
# ---------------------------------------------------------------------------------------


def test_strongswan_fetches_ca_cert(micromdm: Micromdm, tmp_path: Path) -> None:
    files = fetch_ca_certs_strongswan(micromdm.url, tmp_path)
    assert [f.name for f in files] == ["caCert.der"]
    assert load_certificate(files[0]) == micromdm.ca
    choice = classify_ca_certs(files)
    assert choice.encryption == choice.signature == files[0]
    assert choice.others == ()


def _make_cert(
    cn: str,
    issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None,
    *,
    ca: bool,
    digital_signature: bool = False,
    key_encipherment: bool = False,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature,
                content_commitment=False,
                key_encipherment=key_encipherment,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


def test_strongswan_scepca_with_ra_chain(tmp_path: Path) -> None:
    """Against a fake GetCACert with root + sub-CA + separate signing/encryption RAs."""
    root = _make_cert("Root", None, ca=True)
    sub = _make_cert("Sub", root, ca=True)
    ra_sig = _make_cert("RA sig", sub, ca=False, digital_signature=True)[0]
    ra_enc = _make_cert("RA enc", sub, ca=False, key_encipherment=True)[0]
    body = pkcs7.serialize_certificates(
        [ra_sig, ra_enc, sub[0], root[0]], serialization.Encoding.DER
    )

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/x-x509-ca-ra-cert")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/scep"
        files = fetch_ca_certs_strongswan(url, tmp_path)
    finally:
        server.shutdown()
        server.server_close()

    by_name = {f.name: load_certificate(f) for f in files}
    assert sorted(by_name) == ["caCert-1.der", "caCert.der", "raCert-2.der", "raCert.der"]
    assert by_name["caCert.der"] == root[0]
    assert by_name["caCert-1.der"] == sub[0]
    assert {by_name["raCert.der"], by_name["raCert-2.der"]} == {ra_sig, ra_enc}

    choice = classify_ca_certs(files)
    assert load_certificate(choice.encryption) == ra_enc
    assert load_certificate(choice.signature) == ra_sig
    assert sorted(p.name for p in choice.others) == ["caCert-1.der", "caCert.der"]


@pytest.mark.xfail(
    strict=True,
    raises=KnownClientBug,
    reason="strongSwan 5.9.8 tests GetCACaps enum indexes as bit masks: it rejects --cipher aes "
    "with 'AES_CBC encryption algorithm not supported by CA' although micromdm advertises AES",
)
def test_strongswan_enrols_aes(micromdm: Micromdm, tmp_path: Path) -> None:
    result = enrol_strongswan(micromdm.url, tmp_path / "s", challenge=CHALLENGE, dn="CN=ss-aes")
    assert result.client == STRONGSWAN
    if "AES_CBC encryption algorithm not supported by CA" in result.stderr:
        raise KnownClientBug("AES_CBC encryption algorithm not supported by CA")
    _assert_issued(result, micromdm.ca, "ss-aes")


@pytest.mark.xfail(
    strict=True,
    raises=KnownClientBug,
    reason="micromdm 2.1.0 signs its CertRep with SignerInfo signatureAlgorithm "
    "sha1WithRSAEncryption; strongSwan 5.9.8 accepts only rsaEncryption there: "
    "'only RSA digest encryption supported' / 'unable to verify PKCS#7 container'",
)
def test_strongswan_enrols_des3_with_sans(micromdm: Micromdm, tmp_path: Path) -> None:
    sans = ["dns:ss.example.com", "other.example.com", "ss@example.com", "ip:192.0.2.7"]
    with CaptureProxy(micromdm.url, tmp_path / "wire") as proxy:
        result = enrol_strongswan(
            proxy.url,
            tmp_path / "s",
            challenge=CHALLENGE,
            dn="C=US, O=scepline, CN=ss-des3",
            sans=sans,
            cipher="des3",
        )
    # What strongSwan sent is right: a POSTed PKCSReq, 3DES-encrypted, with the SANs.
    (der_file,) = proxy.captured
    assert der_file.name.endswith("-post-pkioperation.der")
    der = der_file.read_bytes()
    assert _signed_attrs(der)[OID_MESSAGE_TYPE] == PKCSREQ
    assert _envelope_cipher(der) == "tripledes_3key"
    issued = next(micromdm.depot.glob("ss-des3.*.pem"))  # micromdm did issue it
    san = load_certificate(issued).extensions.get_extension_for_class(  # type: ignore[union-attr]
        x509.SubjectAlternativeName
    )
    assert set(san.value.get_values_for_type(x509.DNSName)) == {
        "ss.example.com",
        "other.example.com",
    }
    assert san.value.get_values_for_type(x509.RFC822Name) == ["ss@example.com"]
    assert [str(a) for a in san.value.get_values_for_type(x509.IPAddress)] == ["192.0.2.7"]

    if "only RSA digest encryption supported" in result.stderr:
        raise KnownClientBug("only RSA digest encryption supported")
    _assert_issued(result, micromdm.ca, "ss-des3")


@pytest.mark.xfail(
    strict=True,
    raises=KnownClientBug,
    reason="the RenewalReq goes out fine, but strongSwan 5.9.8 rejects micromdm's "
    "sha1WithRSAEncryption CertRep signature ('only RSA digest encryption supported')",
)
def test_strongswan_renews_with_renewalreq(micromdm: Micromdm, tmp_path: Path) -> None:
    first = enrol_scepclient(micromdm.url, tmp_path / "c", challenge=CHALLENGE, cn="ss-renew")
    _assert_issued(first, micromdm.ca, "ss-renew")
    old_cert = first.workdir / "client.pem"
    with CaptureProxy(micromdm.url, tmp_path / "wire") as proxy:
        result = enrol_strongswan(
            proxy.url,
            tmp_path / "s",
            challenge=CHALLENGE,
            dn="C=US, O=scep-client, OU=MDM, CN=ss-renew",
            cipher="des3",
            renew_cert=old_cert,
            renew_key=first.key_path,
        )
    (der_file,) = proxy.captured
    assert _signed_attrs(der_file.read_bytes())[OID_MESSAGE_TYPE] == RENEWALREQ
    if "only RSA digest encryption supported" in result.stderr:
        raise KnownClientBug("only RSA digest encryption supported")
    _assert_issued(result, micromdm.ca, "ss-renew")


# ---------------------------------------------------------------------------------------
# certmonger
# ---------------------------------------------------------------------------------------


@pytest.mark.xfail(
    strict=True,
    raises=KnownClientBug,
    reason="micromdm's GetCACert returns one certificate, which certmonger 0.79.17 keeps only "
    "as the RA/encryption cert, so it has no trust anchor for the CertRep signature: "
    "'failed to verify signature on server response ... certificate verify error' "
    "(X509 error 18, self-signed certificate). The CA's missing digitalSignature KU is "
    "ignored by certmonger's verify callback; see test_certmonger_enrols_with_signing_ca",
)
def test_certmonger_enrols(micromdm: Micromdm, tmp_path: Path) -> None:
    with CaptureProxy(micromdm.url, tmp_path / "wire") as proxy:
        result = enrol_certmonger(
            proxy.url,
            tmp_path / "m",
            challenge=CHALLENGE,
            subject="CN=cm-enrol,O=scepline",
            sans=["dns:cm.example.com", "cm@example.com"],
        )
    assert result.client == CERTMONGER
    assert _processes_under(tmp_path) == [], "certmonger/dbus left running"
    # certmonger sent a PKCSReq over GET although POSTPKIOperation is advertised.
    captured = proxy.captured
    assert captured and all(p.name.endswith("-get-pkioperation.der") for p in captured)
    attrs = _signed_attrs(captured[0].read_bytes())
    assert attrs[OID_MESSAGE_TYPE] == PKCSREQ
    assert str(attrs[OID_TRANSACTION_ID]).isdigit()  # a long decimal transaction ID
    assert _envelope_cipher(captured[0].read_bytes()) == "aes256_cbc"
    get_ca = [e.raw_path for e in proxy.exchanges if e.operation == "GetCACert"]
    assert "/scep?operation=GetCACert&message=0" in get_ca

    known = "failed to verify signature on server response"
    if known in result.stdout and "certificate verify error" in result.stdout:
        raise KnownClientBug(known)
    _assert_issued(result, micromdm.ca, "cm-enrol")


@pytest.mark.xfail(
    strict=True,
    raises=KnownClientBug,
    reason="given the CA as signing CA (add-scep-ca -N), certmonger verifies micromdm's "
    "CertRep, but micromdm 2.1.0 encrypts the issued cert with single DES, which "
    "OpenSSL 3 refuses: 'Error decrypting PKCS#7 ... digital envelope routines::unsupported'",
)
def test_certmonger_enrols_with_signing_ca(micromdm: Micromdm, tmp_path: Path) -> None:
    result = enrol_certmonger(
        micromdm.url,
        tmp_path / "m",
        challenge=CHALLENGE,
        subject="CN=cm-signing-ca",
        signing_ca=micromdm.ca_pem,
    )
    assert _processes_under(tmp_path) == [], "certmonger/dbus left running"
    if "digital envelope routines::unsupported" in result.stderr:
        raise KnownClientBug("digital envelope routines::unsupported")
    _assert_issued(result, micromdm.ca, "cm-signing-ca")


# ---------------------------------------------------------------------------------------
# hard timeouts
# ---------------------------------------------------------------------------------------


def test_hung_server_is_killed_at_the_deadline(tmp_path: Path) -> None:
    """A server that accepts but never answers: every client is killed, nothing is left."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/scep"
        runs = [
            (2.0, lambda w: enrol_scepclient(url, w, challenge="x", cn="h", timeout=2)),
            (2.0, lambda w: enrol_strongswan(url, w, challenge="x", dn="CN=h", timeout=2)),
            (8.0, lambda w: enrol_certmonger(url, w, challenge="x", subject="CN=h", timeout=8)),
        ]
        for i, (budget, enrol) in enumerate(runs):
            started = time.monotonic()
            result = enrol(tmp_path / str(i))
            took = time.monotonic() - started
            assert result.returncode == TIMED_OUT, _diag(result)
            assert "timed out" in result.stderr
            assert result.certificate is None
            assert budget <= took < budget + 3
    assert _processes_under(tmp_path) == []


# ---------------------------------------------------------------------------------------
# recorded test data (tests/data/scep, captured with this harness)
# ---------------------------------------------------------------------------------------

DATA = Path(__file__).resolve().parents[1] / "data" / "scep"


def test_recorded_messages_match_manifest() -> None:
    manifest = json.loads((DATA / "manifest.json").read_text())
    assert manifest
    for entry in manifest:
        der = (DATA / entry["file"]).read_bytes()
        attrs = _signed_attrs(der)
        assert attrs[OID_MESSAGE_TYPE] == entry["request"]["messageType"], entry["file"]
        assert attrs[OID_TRANSACTION_ID] == entry["request"]["transactionID"], entry["file"]
        assert _envelope_cipher(der) == entry["request"]["contentEncryption"], entry["file"]
        serialization.load_pem_private_key((DATA / entry["signer_key"]).read_bytes(), password=None)
        if "raw_query" in entry:
            query = (DATA / entry["raw_query"]).read_text().strip()
            message = dict(parse_raw_query(query))["message"]
            assert decode_get_message(message) == der, entry["file"]

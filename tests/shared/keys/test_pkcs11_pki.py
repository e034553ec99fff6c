"""The existing CA, CRL and SCEP code, unchanged, with keys held by SoftHSM2.

OpenSSL, an independent implementation, judges every signature.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import Encoding

from scepline_shared.ca import CertificateProfile, build_crl, issue_certificate, new_serial
from scepline_shared.keys import KeyPair, SigningKey
from scepline_shared.keys.pkcs11 import Pkcs11RsaPrivateKey
from scepline_shared.scep import (
    BadMessageCheck,
    BadRequest,
    ContentEncryption,
    Digest,
    MessageType,
    PkiStatus,
    build_cert_rep,
    build_request,
    open_envelope,
    parse_message_data,
    read_pki_message,
)
from tests.fixtures.softhsm import KeySpec, SoftHsmKeys
from tests.support.pki import csr_for, name, requester

NOW = dt.datetime.now(dt.UTC)
SPECS: list[KeySpec] = ["rsa-2048", "rsa-3072", "p-256", "p-384"]


def ca_pair(key: SigningKey, common_name: str, *, key_encipherment: bool = False) -> KeyPair:
    """A self-signed CA (or RA) certificate signed by the token key."""
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name(common_name))
        .issuer_name(name(common_name))
        .public_key(key.public_key())
        .serial_number(new_serial())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=key_encipherment,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(key=key, certificate=certificate)


def openssl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)


def write_pem(path: Path, value: x509.Certificate | x509.CertificateRevocationList) -> None:
    path.write_bytes(value.public_bytes(Encoding.PEM))


@pytest.mark.parametrize("spec", SPECS)
def test_issued_certificate_and_crl_verify_with_openssl(
    softhsm_keys: SoftHsmKeys, tmp_path: Path, spec: KeySpec
):
    ca = ca_pair(softhsm_keys[spec], f"token CA {spec}")
    leaf = issue_certificate(
        csr=csr_for(requester(), cn=f"device-{spec}"),
        ca=ca,
        profile=CertificateProfile(),
        serial=new_serial(),
        now=NOW,
    )
    leaf.verify_directly_issued_by(ca.certificate)
    write_pem(tmp_path / "ca.pem", ca.certificate)
    write_pem(tmp_path / "leaf.pem", leaf)
    verified = openssl("verify", "-CAfile", "ca.pem", "leaf.pem", cwd=tmp_path)
    assert verified.returncode == 0, verified.stderr
    assert "leaf.pem: OK" in verified.stdout

    crl = build_crl(
        ca=ca,
        revoked=[(leaf.serial_number, NOW, 1)],
        number=1,
        this_update=NOW,
        next_update=NOW + dt.timedelta(days=1),
    )
    assert crl.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]
    write_pem(tmp_path / "crl.pem", crl)
    crl_check = openssl(
        "crl", "-in", "crl.pem", "-CAfile", "ca.pem", "-verify", "-noout", cwd=tmp_path
    )
    assert crl_check.returncode == 0, crl_check.stderr
    assert "verify OK" in crl_check.stdout + crl_check.stderr
    revoked = openssl(
        "verify", "-crl_check", "-CRLfile", "crl.pem", "-CAfile", "ca.pem", "leaf.pem", cwd=tmp_path
    )
    assert revoked.returncode != 0
    assert "certificate revoked" in revoked.stdout + revoked.stderr


def test_pss_signed_leaf_verifies_with_openssl(softhsm_keys: SoftHsmKeys, tmp_path: Path):
    ca = ca_pair(softhsm_keys.rsa("rsa-3072"), "token CA PSS")
    client = requester()
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("pss leaf"))
        .issuer_name(ca.certificate.subject)
        .public_key(client.key.public_key())
        .serial_number(new_serial())
        .not_valid_before(NOW - dt.timedelta(minutes=5))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .sign(
            ca.key,
            hashes.SHA256(),
            rsa_padding=padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH),
        )
    )
    write_pem(tmp_path / "ca.pem", ca.certificate)
    write_pem(tmp_path / "leaf.pem", leaf)
    verified = openssl("verify", "-CAfile", "ca.pem", "leaf.pem", cwd=tmp_path)
    assert verified.returncode == 0, verified.stderr


def scep_request(
    ra: KeyPair, encryption: ContentEncryption = ContentEncryption.AES128_CBC
) -> bytes:
    client = requester()
    return build_request(
        message_type=MessageType.PKCS_REQ,
        transaction_id="tx-hsm",
        message_data=csr_for(client).public_bytes(Encoding.DER),
        signer_key=client.key,
        signer_certificate=client.certificate,
        recipient=ra.certificate,
        encryption=encryption,
        digest=Digest.SHA256,
        sender_nonce=b"n" * 16,
    )


@pytest.mark.parametrize(
    "encryption",
    [ContentEncryption.AES128_CBC, ContentEncryption.AES256_CBC, ContentEncryption.DES3_CBC],
    ids=lambda e: e.name,
)
def test_scep_round_trip_with_a_token_ra_key(
    softhsm_keys: SoftHsmKeys, tmp_path: Path, encryption: ContentEncryption
):
    ra = ca_pair(softhsm_keys.rsa(), "token RA", key_encipherment=True)
    client = requester()
    message = read_pki_message(scep_request(ra, encryption))
    data, used = open_envelope(
        message, recipient_key=ra.key, recipient=ra.certificate, allowed=tuple(ContentEncryption)
    )
    assert used is encryption
    assert parse_message_data(message, data).csr == csr_for(client)

    reply = build_cert_rep(
        request=message.header,
        status=PkiStatus.SUCCESS,
        signer_key=ra.key,
        signer_certificate=ra.certificate,
        certificates=[client.certificate],
        recipient=message.signer_certificate,
        encryption=used,
    )
    (tmp_path / "rep.der").write_bytes(reply)
    write_pem(tmp_path / "ra.pem", ra.certificate)
    verified = openssl(
        "cms", "-verify", "-inform", "DER", "-in", "rep.der", "-CAfile", "ra.pem",
        "-purpose", "any", "-binary", "-out", "envelope.der",
        cwd=tmp_path,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert "Verification successful" in verified.stderr


def test_scep_failure_reply_signed_by_an_ec_token_key_verifies(
    softhsm_keys: SoftHsmKeys, tmp_path: Path
):
    ra = ca_pair(softhsm_keys.rsa(), "token RA", key_encipherment=True)
    signer = ca_pair(softhsm_keys.ec(), "token EC signer")
    message = read_pki_message(scep_request(ra))
    reply = build_cert_rep(
        request=message.header,
        status=PkiStatus.PENDING,
        signer_key=signer.key,
        signer_certificate=signer.certificate,
    )
    (tmp_path / "rep.der").write_bytes(reply)
    write_pem(tmp_path / "signer.pem", signer.certificate)
    verified = openssl(
        "cms", "-verify", "-inform", "DER", "-in", "rep.der", "-CAfile", "signer.pem",
        "-purpose", "any", "-content", "/dev/null", "-out", "/dev/null",
        cwd=tmp_path,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr


class RecordingKey(Pkcs11RsaPrivateKey):
    """The token key, noting what each decrypt raised."""

    raised: list[BaseException]

    def decrypt(self, ciphertext: bytes, padding: padding.AsymmetricPadding) -> bytes:
        try:
            return super().decrypt(ciphertext, padding)
        except BaseException as exc:
            self.raised.append(exc)
            raise


def test_corrupted_content_key_gives_the_generic_failure(softhsm_keys: SoftHsmKeys):
    """RFC 3218 (docs/specs/hsm-and-cms.md, "Decryption failures must all look alike"):
    the token's error never reaches the SCEP layer as itself."""
    token_key = softhsm_keys.rsa()
    key = RecordingKey(token_key.token, token_key.ref, token_key.public_key())
    key.raised = []
    ra = ca_pair(key, "token RA", key_encipherment=True)
    message = read_pki_message(scep_request(ra))
    assert message.envelope is not None
    envelope = bytearray(message.envelope)
    # The RSA-encrypted key is the 256-byte OCTET STRING; flip a byte in its middle.
    start = envelope.index(b"\x04\x82\x01\x00") + 4
    envelope[start + 100] ^= 0xFF
    tampered = replace(message, envelope=bytes(envelope))
    # Decryption continues with a random key: almost always a padding error, and
    # 1 time in ~256 plaintext that is not a CSR.
    with pytest.raises((BadMessageCheck, BadRequest)):
        data, _ = open_envelope(
            tampered, recipient_key=key, recipient=ra.certificate, allowed=tuple(ContentEncryption)
        )
        parse_message_data(message, data)
    assert len(key.raised) == 1
    assert type(key.raised[0]) is ValueError
    assert key.raised[0].__cause__ is None

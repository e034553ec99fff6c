"""The codec round-trips every algorithm it supports, and what it builds is
verifiable by OpenSSL, an independent CMS implementation."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from scepline_shared.scep import (
    BadMessageCheck,
    BadRequest,
    ContentEncryption,
    Digest,
    FailInfo,
    MessageType,
    PkiStatus,
    build_cert_rep,
    build_degenerate,
    build_request,
    open_envelope,
    parse_degenerate,
    parse_message_data,
    read_cert_rep,
    read_pki_message,
)
from tests.support.pki import csr_for, requester, rsa_key, self_signed

RA_KEY = rsa_key("ra")
RA = self_signed(RA_KEY, "test RA")


def pkcs_req(encryption: ContentEncryption, digest: Digest, nonce: bytes) -> bytes:
    client = requester()
    return build_request(
        message_type=MessageType.PKCS_REQ,
        transaction_id="tx-1",
        message_data=csr_for(client).public_bytes(Encoding.DER),
        signer_key=client.key,
        signer_certificate=client.certificate,
        recipient=RA,
        encryption=encryption,
        digest=digest,
        sender_nonce=nonce,
    )


@pytest.mark.parametrize("encryption", list(ContentEncryption))
@pytest.mark.parametrize("digest", list(Digest))
def test_pkcs_req_round_trip_and_success_reply(encryption: ContentEncryption, digest: Digest):
    client = requester()
    nonce = os.urandom(16)
    message = read_pki_message(pkcs_req(encryption, digest, nonce))

    assert message.message_type is MessageType.PKCS_REQ
    assert message.transaction_id == "tx-1"
    assert message.header.sender_nonce == nonce
    assert message.header.digest is digest
    assert message.signer_certificate == client.certificate
    data, used = open_envelope(
        message, recipient_key=RA_KEY, recipient=RA, allowed=tuple(ContentEncryption)
    )
    assert used is encryption
    assert parse_message_data(message, data).csr == csr_for(client)

    reply = build_cert_rep(
        request=message.header,
        status=PkiStatus.SUCCESS,
        signer_key=RA_KEY,
        signer_certificate=RA,
        certificates=[client.certificate],
        recipient=message.signer_certificate,
        encryption=used,
    )
    rep = read_cert_rep(
        reply,
        expected_signer=RA,
        sender_nonce=nonce,
        client_key=client.key,
        client_certificate=client.certificate,
    )
    assert rep.status is PkiStatus.SUCCESS
    assert rep.transaction_id == "tx-1"
    assert rep.certificates == (client.certificate,)


def failure_or_pending(status: PkiStatus) -> bytes:
    message = read_pki_message(pkcs_req(ContentEncryption.AES128_CBC, Digest.SHA256, b"n" * 16))
    return build_cert_rep(
        request=message.header,
        status=status,
        fail_info=FailInfo.BAD_REQUEST if status is PkiStatus.FAILURE else None,
        fail_info_text="challenge wrong" if status is PkiStatus.FAILURE else None,
        signer_key=RA_KEY,
        signer_certificate=RA,
    )


@pytest.mark.parametrize("status", [PkiStatus.FAILURE, PkiStatus.PENDING], ids=lambda s: s.name)
def test_failure_and_pending_carry_an_empty_content_and_no_envelope(status: PkiStatus):
    reply = failure_or_pending(status)
    # An empty id-data eContent, as micromdm's and EJBCA's FAILURE/PENDING carry.
    encapsulated = cms.ContentInfo.load(reply)["content"]["encap_content_info"]
    assert encapsulated["content_type"].native == "data"
    assert encapsulated["content"].native == b""  # present, and empty
    parsed = read_pki_message(reply)
    assert parsed.envelope is None
    assert parsed.pki_status is status
    assert parsed.recipient_nonce == b"n" * 16
    if status is PkiStatus.FAILURE:
        assert parsed.fail_info is FailInfo.BAD_REQUEST
        assert parsed.fail_info_text == "challenge wrong"


@pytest.mark.parametrize("status", [PkiStatus.FAILURE, PkiStatus.PENDING], ids=lambda s: s.name)
def test_failure_and_pending_verify_with_openssl_pkcs7(tmp_path: Path, status: PkiStatus):
    """certmonger reads CertReps with OpenSSL's PKCS#7 API, which refuses a SignedData
    without content ("PKCS7 routines::no content"); ``openssl smime`` uses that API."""
    (tmp_path / "rep.der").write_bytes(failure_or_pending(status))
    verify = subprocess.run(
        ["openssl", "smime", "-verify", "-noverify", "-inform", "DER", "-in", "rep.der"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr


def test_cert_rep_verifies_and_decrypts_with_openssl(tmp_path: Path):
    client = requester()
    message = read_pki_message(pkcs_req(ContentEncryption.AES256_CBC, Digest.SHA256, b"x" * 16))
    reply = build_cert_rep(
        request=message.header,
        status=PkiStatus.SUCCESS,
        signer_key=RA_KEY,
        signer_certificate=RA,
        certificates=[client.certificate],
        recipient=client.certificate,
        encryption=ContentEncryption.AES256_CBC,
    )
    (tmp_path / "rep.der").write_bytes(reply)
    (tmp_path / "ra.pem").write_bytes(RA.public_bytes(Encoding.PEM))
    verify = subprocess.run(
        [
            "openssl",
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            "rep.der",
            "-CAfile",
            "ra.pem",
            "-binary",
            "-out",
            "envelope.der",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    key_pem = client.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    (tmp_path / "client.key").write_bytes(key_pem)
    (tmp_path / "client.pem").write_bytes(client.certificate.public_bytes(Encoding.PEM))
    decrypt = subprocess.run(
        [
            "openssl",
            "cms",
            "-decrypt",
            "-inform",
            "DER",
            "-in",
            "envelope.der",
            "-recip",
            "client.pem",
            "-inkey",
            "client.key",
            "-binary",
            "-out",
            "certs.der",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert decrypt.returncode == 0, decrypt.stderr
    certificates, _ = parse_degenerate((tmp_path / "certs.der").read_bytes())
    assert certificates == [client.certificate]


def test_degenerate_round_trip_with_crl():
    from tests.support.crl import empty_crl

    crl = empty_crl(RA_KEY, RA)
    certificates, crls = parse_degenerate(build_degenerate([RA], [crl]))
    assert certificates == [RA]
    assert crls == [crl]


def test_signature_over_tampered_attributes_is_bad_message_check():
    der = bytearray(pkcs_req(ContentEncryption.AES128_CBC, Digest.SHA256, b"a" * 16))
    # The transaction id is in the signed attributes: change one byte of it.
    position = der.index(b"tx-1")
    der[position + 3] = ord("2")
    with pytest.raises(BadMessageCheck) as failure:
        read_pki_message(bytes(der))
    assert failure.value.header is not None
    assert failure.value.header.transaction_id == "tx-2"


def test_envelope_for_another_recipient_is_bad_message_check():
    other_key = rsa_key("other-ra")
    other = self_signed(other_key, "other RA")
    message = read_pki_message(pkcs_req(ContentEncryption.AES128_CBC, Digest.SHA256, b"b" * 16))
    with pytest.raises(BadMessageCheck, match="not addressed"):
        open_envelope(
            message, recipient_key=other_key, recipient=other, allowed=tuple(ContentEncryption)
        )


def test_corrupted_content_key_gives_one_generic_error():
    """RFC 3218: a broken key transport looks like any other decryption failure."""
    der = pkcs_req(ContentEncryption.AES128_CBC, Digest.SHA256, b"c" * 16)
    message = read_pki_message(der)
    assert message.envelope is not None
    envelope = bytearray(message.envelope)
    # The RSA-encrypted key is the 256-byte OCTET STRING; flip a byte in its middle.
    start = envelope.index(b"\x04\x82\x01\x00") + 4
    envelope[start + 100] ^= 0xFF
    from dataclasses import replace

    tampered = replace(message, envelope=bytes(envelope))
    # Decryption continues with a random key, so the outcome is garbage: almost
    # always a padding error, and 1 time in ~256 plaintext that is not a CSR.
    with pytest.raises((BadMessageCheck, BadRequest)):
        data, _ = open_envelope(
            tampered, recipient_key=RA_KEY, recipient=RA, allowed=tuple(ContentEncryption)
        )
        parse_message_data(message, data)

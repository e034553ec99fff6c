"""Messages recorded from real clients (tests/data/scep, see its README) decode,
verify and decrypt with our codec; micromdm's CertReps read as a client would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from scepline_ingress.http import decode_get_message, query_parameters
from scepline_shared.scep import (
    ContentEncryption,
    MessageType,
    PkiStatus,
    open_envelope,
    parse_degenerate,
    parse_message_data,
    read_pki_message,
)
from scepline_validator.challenge import challenge_password

DATA = Path(__file__).parents[2] / "data" / "scep"
MANIFEST: list[dict[str, Any]] = json.loads((DATA / "manifest.json").read_text())


def recipient_of(entry: dict[str, Any]) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    folder = DATA / entry["file"].split("/")[0]
    if (folder / "ra.key").exists():
        key_file, cert_file = folder / "ra.key", folder / "ra.crt"
    else:  # micromdm has no RA: requests are encrypted to its CA
        key_file, cert_file = folder / "ca.key", folder / "ca.pem"
    key = load_pem_private_key(key_file.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key, x509.load_pem_x509_certificate(cert_file.read_bytes())


def private_key(relative: str) -> rsa.RSAPrivateKey:
    key = load_pem_private_key((DATA / relative).read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["file"] for e in MANIFEST])
def test_recorded_request_decodes_verifies_and_decrypts(entry: dict[str, Any]):
    message = read_pki_message((DATA / entry["file"]).read_bytes())
    recorded = entry["request"]
    assert message.transaction_id == recorded["transactionID"]
    assert message.message_type == MessageType(int(recorded["messageType"]))
    assert message.header.sender_nonce.hex() == recorded["senderNonce"]

    key, certificate = recipient_of(entry)
    data, encryption = open_envelope(
        message, recipient_key=key, recipient=certificate, allowed=tuple(ContentEncryption)
    )
    assert encryption.asn1_name == recorded["contentEncryption"]
    request = parse_message_data(message, data)
    csr = request.csr  # type: ignore[union-attr]
    # The signer signed the message; the CSR's key is the client's (new) key.
    expected_key = private_key(entry.get("new_key") or entry["signer_key"]).public_key()
    assert csr.public_key() == expected_key
    if message.message_type is MessageType.PKCS_REQ and "renews" not in entry:
        password = challenge_password(csr)
        assert password is not None and password.decode() == entry["challenge"]


@pytest.mark.parametrize(
    "entry", [e for e in MANIFEST if "raw_query" in e], ids=lambda e: e["file"]
)
def test_recorded_get_query_decodes_to_the_same_message(entry: dict[str, Any]):
    raw = (DATA / entry["raw_query"]).read_bytes().strip()
    message = decode_get_message(query_parameters(raw)["message"])
    assert message == (DATA / entry["file"]).read_bytes()


@pytest.mark.parametrize(
    "entry",
    [e for e in MANIFEST if e.get("response", {}).get("file")],
    ids=lambda e: e["response"]["file"],
)
def test_micromdm_cert_rep_reads_as_a_client_sees_it(entry: dict[str, Any]):
    """Our client side understands another server's CertRep (SHA-1, single DES)."""
    response = entry["response"]
    message = read_pki_message((DATA / response["file"]).read_bytes())
    assert message.message_type is MessageType.CERT_REP
    assert message.pki_status == PkiStatus(int(response["pkiStatus"]))
    assert message.recipient_nonce is not None
    assert message.recipient_nonce.hex() == response["recipientNonce"]
    if message.pki_status is PkiStatus.SUCCESS:
        request = read_pki_message((DATA / entry["file"]).read_bytes())
        payload, _ = open_envelope(
            message,
            recipient_key=private_key(entry["signer_key"]),
            recipient=request.signer_certificate,
            allowed=tuple(ContentEncryption),
        )
        certificates, _ = parse_degenerate(payload)
        assert certificates

"""Several RA keys at once (CA rollover): the envelope's RecipientInfo picks the
key, and every unwrap failure, whatever key type raised it, looks the same."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import replace

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from pkcs11 import exceptions as p11e

from scepline_shared.keys.pkcs11 import HsmError, TokenUnavailable
from scepline_shared.scep import (
    BadMessageCheck,
    BadRequest,
    ContentEncryption,
    Digest,
    KeyUnavailable,
    MessageType,
    PkiMessage,
    build_request,
    open_envelope,
    parse_message_data,
    read_pki_message,
)
from scepline_shared.scep.envelope import decrypt_enveloped_data
from scepline_shared.scep.message import open_envelope_for
from tests.support.pki import csr_for, name, requester, rsa_key

ALL = tuple(ContentEncryption)


def ra_certificate(key: rsa.RSAPrivateKey, issuer_key: rsa.RSAPrivateKey) -> x509.Certificate:
    """An RA certificate from a CA named "Rollover CA" (the name survives a rollover)."""
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name("Rollover RA"))
        .issuer_name(name("Rollover CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(issuer_key, hashes.SHA256())
    )


OLD_KEY, NEW_KEY, NEXT_KEY = rsa_key("old-ra"), rsa_key("new-ra"), rsa_key("next-ra")
OLD = ra_certificate(OLD_KEY, rsa_key("old-ca"))
NEW = ra_certificate(NEW_KEY, rsa_key("new-ca"))
NEXT = ra_certificate(NEXT_KEY, rsa_key("next-ca"))
CANDIDATES = ((NEW_KEY, NEW), (OLD_KEY, OLD), (NEXT_KEY, NEXT))


def request_to(recipient: x509.Certificate) -> PkiMessage:
    client = requester("rollover-client")
    der = build_request(
        message_type=MessageType.PKCS_REQ,
        transaction_id="tx-rollover",
        message_data=csr_for(client).public_bytes(Encoding.DER),
        signer_key=client.key,
        signer_certificate=client.certificate,
        recipient=recipient,
        encryption=ContentEncryption.AES256_CBC,
        digest=Digest.SHA256,
        sender_nonce=os.urandom(16),
    )
    return read_pki_message(der)


@pytest.mark.parametrize(
    ("recipient", "key"),
    [(NEW, NEW_KEY), (OLD, OLD_KEY), (NEXT, NEXT_KEY)],
    ids=["new", "old", "next"],
)
def test_the_recipient_info_picks_the_key(recipient: x509.Certificate, key: rsa.RSAPrivateKey):
    message = request_to(recipient)
    opened = open_envelope_for(message, recipients=CANDIDATES, allowed=ALL)
    assert opened.recipient == recipient
    assert opened.recipient_key is key
    assert opened.encryption is ContentEncryption.AES256_CBC
    assert parse_message_data(message, opened.plaintext).csr == csr_for(
        requester("rollover-client")
    )


def test_same_issuer_name_is_told_apart_by_serial():
    assert OLD.issuer == NEW.issuer and OLD.serial_number != NEW.serial_number
    opened = open_envelope_for(request_to(OLD), recipients=CANDIDATES, allowed=ALL)
    assert opened.recipient == OLD


def test_subject_key_identifier_recipient_is_matched():
    """RFC 5652 lets a client name the recipient by subjectKeyIdentifier (OpenSSL -keyid)."""
    message = request_to(OLD)
    assert message.envelope is not None
    info = cms.ContentInfo.load(message.envelope)
    ktri = info["content"]["recipient_infos"][0].chosen
    ski = OLD.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    ktri["rid"] = cms.RecipientIdentifier(name="subject_key_identifier", value=ski)
    rewritten = replace(message, envelope=info.dump(force=True))
    opened = open_envelope_for(rewritten, recipients=CANDIDATES, allowed=ALL)
    assert opened.recipient == OLD


def test_envelope_for_none_of_the_candidates_is_bad_message_check():
    message = request_to(NEXT)
    with pytest.raises(BadMessageCheck, match="not addressed") as raised:
        open_envelope(message, recipients=CANDIDATES[:2], allowed=ALL)
    assert raised.value.header == message.header


def test_single_recipient_keywords_still_work_and_forms_do_not_mix():
    message = request_to(OLD)
    data, used = open_envelope(message, recipient_key=OLD_KEY, recipient=OLD, allowed=ALL)
    assert used is ContentEncryption.AES256_CBC and data
    assert message.envelope is not None
    assert decrypt_enveloped_data(message.envelope, recipients=CANDIDATES, allowed=ALL) == (
        data,
        used,
    )
    with pytest.raises(TypeError):
        open_envelope(message, recipients=CANDIDATES, recipient_key=OLD_KEY, allowed=ALL)
    with pytest.raises(TypeError):
        open_envelope(message, recipients=(), allowed=ALL)
    with pytest.raises(TypeError):
        open_envelope(message, recipient_key=OLD_KEY, allowed=ALL)


class RaisingKey(rsa.RSAPrivateKey):
    """A token key stand-in: decrypt raises what a PKCS#11 adapter might let escape."""

    def __init__(self, real: rsa.RSAPrivateKey, error: Exception) -> None:
        self._real = real
        self._error = error

    def decrypt(self, ciphertext: bytes, padding: padding.AsymmetricPadding) -> bytes:
        raise self._error

    @property
    def key_size(self) -> int:
        return self._real.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._real.public_key()

    def sign(self, data: bytes, padding: padding.AsymmetricPadding, algorithm: object) -> bytes:
        raise NotImplementedError

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        raise NotImplementedError

    def private_bytes(self, *args: object) -> bytes:
        raise NotImplementedError

    def __copy__(self) -> PrivateKeyTypes:
        return self

    def __deepcopy__(self, memo: dict) -> PrivateKeyTypes:
        return self


@pytest.mark.parametrize(
    "error",
    [
        p11e.GeneralError(),  # SoftHSM's answer to bad PKCS#1 padding (docs/specs/hsm-and-cms.md)
        p11e.EncryptedDataInvalid(),
        p11e.EncryptedDataLenRange(),
        ValueError("Decryption failed"),
        TypeError("bad"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_every_unwrap_failure_of_a_token_key_is_the_generic_bad_message_check(error: Exception):
    """RFC 3218: decryption carries on with a random content key, so the client
    learns nothing from which error the key raised."""
    message = request_to(OLD)
    key = RaisingKey(OLD_KEY, error)
    with pytest.raises((BadMessageCheck, BadRequest)) as raised:
        data, _ = open_envelope(message, recipients=[(key, OLD)], allowed=ALL)
        parse_message_data(message, data)
    assert raised.value.header == message.header


@pytest.mark.parametrize(
    "error",
    [TokenUnavailable("token gone"), HsmError("login failed"), KeyUnavailable("any backend")],
    ids=lambda error: type(error).__name__,
)
def test_an_unreachable_token_propagates_so_the_client_retries(error: Exception):
    """An outage does not depend on the ciphertext: it must not become a
    permanent badMessageCheck (ingress answers 503 with Retry-After). The codec
    knows outages by its own KeyUnavailable, which the PKCS#11 adapters raise
    (HsmError; a lost session is retried once, then TokenUnavailable)."""
    message = request_to(OLD)
    with pytest.raises(type(error)):
        open_envelope(message, recipients=[(RaisingKey(OLD_KEY, error), OLD)], allowed=ALL)

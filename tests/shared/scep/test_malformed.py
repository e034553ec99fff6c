"""Whatever bytes arrive, the codec answers with a ScepError, never another
exception: the ingress maps ScepError to a 4xx or a CertRep FAILURE."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scepline_shared.scep import (
    ContentEncryption,
    Digest,
    MessageType,
    ScepError,
    build_request,
    open_envelope,
    parse_message_data,
    read_pki_message,
)
from tests.support.pki import csr_for, requester, rsa_key, self_signed

# Raise for a longer local fuzzing run: FUZZ_EXAMPLES=20000 pytest tests/shared/scep
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
RA_KEY = rsa_key("ra")
RA = self_signed(RA_KEY, "test RA")
CLIENT = requester()
VALID = build_request(
    message_type=MessageType.PKCS_REQ,
    transaction_id="fuzz",
    message_data=csr_for(CLIENT).public_bytes(Encoding.DER),
    signer_key=CLIENT.key,
    signer_certificate=CLIENT.certificate,
    recipient=RA,
    encryption=ContentEncryption.AES128_CBC,
    digest=Digest.SHA256,
)


def process(der: bytes) -> None:
    """The server path, as ingress runs it."""
    try:
        message = read_pki_message(der)
        data, _ = open_envelope(
            message, recipient_key=RA_KEY, recipient=RA, allowed=tuple(ContentEncryption)
        )
        parse_message_data(message, data)
    except ScepError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_never_escape_as_another_exception(der: bytes):
    process(der)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_valid_message_never_escapes(data: st.DataObject):
    der = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(der) - 1))
        der[position] = data.draw(st.integers(0, 255))
    process(bytes(der))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(VALID) - 1))
def test_truncated_message_never_escapes(length: int):
    process(VALID[:length])


@settings(max_examples=60, deadline=None)
@given(
    transaction_id=st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?",
        min_size=1,
        max_size=200,
    ),
    nonce=st.binary(min_size=1, max_size=64),
    encryption=st.sampled_from(list(ContentEncryption)),
    digest=st.sampled_from(list(Digest)),
    message_type=st.sampled_from([MessageType.PKCS_REQ, MessageType.RENEWAL_REQ]),
)
def test_any_valid_request_round_trips(
    transaction_id: str,
    nonce: bytes,
    encryption: ContentEncryption,
    digest: Digest,
    message_type: MessageType,
):
    csr = csr_for(CLIENT)
    der = build_request(
        message_type=message_type,
        transaction_id=transaction_id,
        message_data=csr.public_bytes(Encoding.DER),
        signer_key=CLIENT.key,
        signer_certificate=CLIENT.certificate,
        recipient=RA,
        encryption=encryption,
        digest=digest,
        sender_nonce=nonce,
    )
    message = read_pki_message(der)
    assert message.transaction_id == transaction_id
    assert message.header.sender_nonce == nonce
    assert message.message_type is message_type
    data, used = open_envelope(message, recipient_key=RA_KEY, recipient=RA, allowed=[encryption])
    assert used is encryption
    assert parse_message_data(message, data).csr == csr

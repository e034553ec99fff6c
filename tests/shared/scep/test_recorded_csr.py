"""Reading back a CSR the store recorded: fields only, the signature was checked
by ingress over the same bytes and is not checked again by each pipeline step."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from scepline_shared.scep import (
    BadMessageCheck,
    BadRequest,
    load_certification_request,
    load_recorded_csr,
)
from tests.support.pki import csr_for, name, requester


def test_a_recorded_csr_reads_back_as_it_was():
    csr = csr_for(requester("recorded"), "recorded-device")
    assert load_recorded_csr(csr.public_bytes(Encoding.DER)) == csr
    assert load_recorded_csr(csr.public_bytes(Encoding.DER)).subject == name("recorded-device")


def test_its_signature_is_not_verified_again():
    der = bytearray(csr_for(requester("recorded"), "tampered").public_bytes(Encoding.DER))
    der[-1] ^= 0x01  # the last byte belongs to the signature
    with pytest.raises(BadMessageCheck):
        load_certification_request(bytes(der))  # what ingress does before recording
    assert load_recorded_csr(bytes(der)).subject == name("tampered")


def test_bytes_that_are_no_csr_raise_the_codec_error():
    with pytest.raises(BadRequest):
        load_recorded_csr(b"\x30\x03\x02\x01\x00")

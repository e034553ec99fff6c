"""new_serial / serial_hex: positive, <= 20 DER octets, >= 64 random bits."""

from __future__ import annotations

from unittest import mock

import pytest
from asn1crypto.core import Integer
from hypothesis import given
from hypothesis import strategies as st

from scepline_shared.ca import MAX_SERIAL, new_serial, serial_hex


def _der_content_octets(n: int) -> int:
    return len(Integer(n).contents)


@given(st.integers(min_value=0, max_value=(1 << 126) - 1))
def test_new_serial_properties_for_every_random_draw(draw: int) -> None:
    # Drive the construction with every possible output of the RNG, including 0.
    with mock.patch("scepline_shared.ca.issue.secrets.randbits", return_value=draw) as randbits:
        serial = new_serial()
    randbits.assert_called_once_with(126)
    assert serial > 0
    assert serial.bit_length() == 127
    assert _der_content_octets(serial) == 16  # <= 20, never a 0x00 sign pad
    assert serial & ((1 << 126) - 1) == draw  # all drawn bits survive


def test_new_serial_is_random() -> None:
    serials = [new_serial() for _ in range(2000)]
    assert len(set(serials)) == len(serials)
    assert all(s.bit_length() == 127 and s <= MAX_SERIAL for s in serials)
    # Every one of the 126 random bit positions takes both values across the sample.
    for bit in range(126):
        ones = sum((s >> bit) & 1 for s in serials)
        assert 0 < ones < len(serials), bit


@given(st.integers(min_value=1, max_value=MAX_SERIAL))
def test_serial_hex_is_canonical(serial: int) -> None:
    text = serial_hex(serial)
    assert text == text.lower()
    assert not text.startswith("0")
    assert int(text, 16) == serial
    assert _der_content_octets(serial) <= 20


def test_serial_hex_examples() -> None:
    assert serial_hex(0xABC) == "abc"
    assert serial_hex(1) == "1"


@pytest.mark.parametrize("bad", [0, -1])
def test_serial_hex_refuses_non_positive(bad: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        serial_hex(bad)


def test_serial_hex_reads_text_and_refuses_other_types() -> None:
    # One reader of serials for the whole product (scepline_shared.serials).
    assert serial_hex("0x00:0A-bc") == "abc"
    with pytest.raises(TypeError):
        serial_hex(1.5)  # type: ignore[arg-type]

"""CertificateProfile: defaults and construction-time validation."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from scepline_shared.ca import CertificateProfile, PolicyViolation, san_type

from ._pki import INTUNE_SID_URI, rsa_key, upn


def test_defaults() -> None:
    profile = CertificateProfile()
    assert profile.validity_days == 365
    assert profile.backdate_seconds == 300
    assert profile.key_usage.digital_signature and profile.key_usage.key_encipherment
    assert not profile.key_usage.key_cert_sign
    assert profile.extended_key_usage == (ExtendedKeyUsageOID.CLIENT_AUTH,)
    assert profile.copy_subject
    assert profile.allowed_san_types == {"dns", "email", "uri", "ip", "upn"}
    assert profile.allowed_key_types == {"rsa", "P-256", "P-384"}
    assert profile.min_rsa_bits == 2048
    assert profile.on_disallowed_san == "drop"


def test_frozen_and_hashable() -> None:
    profile = CertificateProfile(allowed_san_types={"dns"})  # type: ignore[arg-type]
    assert isinstance(profile.allowed_san_types, frozenset)
    hash(profile)
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.validity_days = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"validity_days": 0}, ValueError),
        ({"backdate_seconds": -1}, ValueError),
        ({"min_rsa_bits": 1024}, ValueError),
        ({"min_rsa_bits": 4096, "max_rsa_bits": 3072}, ValueError),
        ({"allowed_san_types": frozenset({"dns", "x400"})}, ValueError),
        ({"allowed_san_types": "dns"}, TypeError),
        ({"allowed_key_types": frozenset({"dsa"})}, ValueError),
        ({"on_disallowed_san": "ignore"}, ValueError),
        ({"key_usage": "digitalSignature"}, TypeError),
        ({"extended_key_usage": ("1.3.6.1.5.5.7.3.2",)}, TypeError),
    ],
)
def test_invalid_configuration_refused(kwargs: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        CertificateProfile(**kwargs)  # type: ignore[arg-type]


def test_san_type_classification() -> None:
    assert san_type(x509.UniformResourceIdentifier(INTUNE_SID_URI)) == "uri"
    assert san_type(upn("a@b.example")) == "upn"
    assert san_type(x509.OtherName(x509.ObjectIdentifier("1.2.3"), b"\x05\x00")) == "other_name"


def test_key_size_bounds() -> None:
    profile = CertificateProfile(min_rsa_bits=3072)
    with pytest.raises(PolicyViolation, match=r"2048 outside 3072\.\.8192"):
        profile.check_public_key(rsa_key(2048).public_key())
    CertificateProfile().check_public_key(ec.generate_private_key(ec.SECP256R1()).public_key())

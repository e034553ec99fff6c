"""CertificateProfile: defaults, construction-time validation, names from configuration."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from scepline_shared.ca import (
    CaMaterial,
    CertificateProfile,
    PolicyViolation,
    issue_certificate,
    new_serial,
    san_type,
)
from scepline_shared.ca.profile import ProfileNameError

from ._pki import INTUNE_SID_URI, make_csr, rsa_key, upn


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


class TestFromNames:
    """CertificateProfile.from_names: the configuration vocabulary (SCEPLINE_CERT_*)."""

    def test_defaults_match_the_default_profile(self) -> None:
        assert CertificateProfile.from_names() == CertificateProfile()

    def test_names_become_extensions(self) -> None:
        profile = CertificateProfile.from_names(
            validity_days=30,
            key_usage=["digital_signature", "nonRepudiation"],
            extended_key_usage=["client_auth", "smartcard_logon", "ipsec_ike", "1.2.3.4.5"],
            san_types=["dns", "upn"],
            on_disallowed_san="refuse",
            copy_subject=False,
            key_types=["rsa", "p-521"],
            min_rsa_bits=3072,
            max_rsa_bits=4096,
        )
        assert profile.validity_days == 30
        assert profile.key_usage.digital_signature and profile.key_usage.content_commitment
        assert not profile.key_usage.key_encipherment
        assert profile.extended_key_usage == (
            ExtendedKeyUsageOID.CLIENT_AUTH,
            x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.2"),
            x509.ObjectIdentifier("1.3.6.1.5.5.7.3.17"),
            x509.ObjectIdentifier("1.2.3.4.5"),
        )
        assert profile.allowed_san_types == {"dns", "upn"}
        assert profile.on_disallowed_san == "refuse"
        assert not profile.copy_subject
        assert profile.allowed_key_types == {"rsa", "P-521"}
        assert (profile.min_rsa_bits, profile.max_rsa_bits) == (3072, 4096)

    def test_spellings_and_duplicates(self) -> None:
        profile = CertificateProfile.from_names(
            key_usage=["keyEncipherment", "Digital-Signature"],
            extended_key_usage=["serverAuth", "server_auth", "EMAIL_PROTECTION"],
            key_types=["RSA", "secp384r1", "prime256v1"],
        )
        assert profile.key_usage == CertificateProfile().key_usage
        assert profile.extended_key_usage == (
            ExtendedKeyUsageOID.SERVER_AUTH,
            ExtendedKeyUsageOID.EMAIL_PROTECTION,
        )
        assert profile.allowed_key_types == {"rsa", "P-384", "P-256"}

    def test_no_eku_means_no_eku_extension(self, rsa_lab: CaMaterial) -> None:
        profile = CertificateProfile.from_names(extended_key_usage=[])
        cert = _issue(rsa_lab, make_csr(), profile)
        with pytest.raises(x509.ExtensionNotFound):
            cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)

    @pytest.mark.parametrize(
        ("kwargs", "field", "message"),
        [
            ({"key_usage": ["digital_signature", "sign_everything"]}, "key_usage", "unknown"),
            ({"key_usage": ["key_cert_sign"]}, "key_usage", "CA certificates"),
            ({"key_usage": ["cRLSign"]}, "key_usage", "CA certificates"),
            ({"key_usage": []}, "key_usage", "at least one"),
            ({"key_usage": ["encipher_only"]}, "key_usage", "key_agreement"),
            ({"extended_key_usage": ["client-auth-ish"]}, "extended_key_usage", "dotted OID"),
            ({"extended_key_usage": ["3.1.2"]}, "extended_key_usage", "unknown"),
            ({"extended_key_usage": "client_auth"}, "extended_key_usage", "single string"),
            ({"san_types": ["dns", "x400"]}, "san_types", "x400"),
            ({"key_types": ["rsa", "dsa"]}, "key_types", "dsa"),
            ({"key_types": []}, "key_types", "at least one"),
            ({"on_disallowed_san": "ignore"}, "on_disallowed_san", "drop"),
            ({"validity_days": 0}, "validity_days", "> 0"),
            ({"min_rsa_bits": 1024}, "min_rsa_bits", "2048"),
            ({"min_rsa_bits": 4096, "max_rsa_bits": 3072}, "max_rsa_bits", "below"),
        ],
    )
    def test_unknown_names_name_the_setting(
        self, kwargs: dict[str, object], field: str, message: str
    ) -> None:
        with pytest.raises(ProfileNameError, match=message) as caught:
            CertificateProfile.from_names(**kwargs)  # type: ignore[arg-type]
        assert caught.value.field == field
        assert isinstance(caught.value, ValueError)


class TestIntuneStrongMappingSan:
    """KB5014754: the SID URL Intune puts in the CSR must reach the certificate."""

    CSR_SANS = (x509.UniformResourceIdentifier(INTUNE_SID_URI), x509.DNSName("pc-7.corp.example"))

    def test_kept_by_the_default_profile(self, rsa_lab: CaMaterial) -> None:
        cert = _issue(rsa_lab, make_csr(sans=self.CSR_SANS), CertificateProfile.from_names())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [INTUNE_SID_URI]

    def test_dropped_when_uri_is_not_allowed(self, rsa_lab: CaMaterial) -> None:
        profile = CertificateProfile.from_names(san_types=["dns", "email", "upn"])
        cert = _issue(rsa_lab, make_csr(sans=self.CSR_SANS), profile)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == []
        assert san.get_values_for_type(x509.DNSName) == ["pc-7.corp.example"]

    def test_refused_when_uri_is_not_allowed_and_refusal_is_configured(
        self, rsa_lab: CaMaterial
    ) -> None:
        profile = CertificateProfile.from_names(san_types=["dns"], on_disallowed_san="refuse")
        with pytest.raises(PolicyViolation, match="uri"):
            _issue(rsa_lab, make_csr(sans=self.CSR_SANS), profile)


def _issue(
    lab: CaMaterial, csr: x509.CertificateSigningRequest, profile: CertificateProfile
) -> x509.Certificate:
    return issue_certificate(csr=csr, ca=lab.ca, profile=profile, serial=new_serial())

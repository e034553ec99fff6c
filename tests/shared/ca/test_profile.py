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

from ._pki import INTUNE_SID_URI, make_csr, name, rsa_key, upn


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
    return issue_certificate(
        csr=csr, ca=lab.ca, profile=profile, serial=new_serial(), names_vouched=True
    )


class TestNamesNobodyVouchedFor:
    """What a shared challenge cannot vouch for is refused unless the profile allows it."""

    @staticmethod
    def _refused(lab: CaMaterial, csr: x509.CertificateSigningRequest, **profile: object) -> str:
        with pytest.raises(PolicyViolation) as caught:
            issue_certificate(
                csr=csr,
                ca=lab.ca,
                profile=CertificateProfile(**profile),  # type: ignore[arg-type]
                serial=new_serial(),
            )
        return caught.value.reason

    def test_control_characters_in_the_subject_or_a_san(self, rsa_lab: CaMaterial) -> None:
        assert "control" in self._refused(rsa_lab, make_csr(subject=name("a\x00b")))
        assert "control" in self._refused(rsa_lab, make_csr(subject=name("a\x1bb")))
        bad_dns = make_csr(sans=[x509.DNSName("host\x00.example")])
        assert "control" in self._refused(rsa_lab, bad_dns)
        assert "control" in self._refused(rsa_lab, make_csr(sans=[upn("me\x07@corp.test")]))

    def test_the_cas_own_subject(self, rsa_lab: CaMaterial) -> None:
        csr = make_csr(subject=rsa_lab.ca.certificate.subject)
        assert "CA's own name" in self._refused(rsa_lab, csr)

    def test_wildcards(self, rsa_lab: CaMaterial) -> None:
        assert "wildcard" in self._refused(rsa_lab, make_csr(sans=[x509.DNSName("*.corp.test")]))
        assert "wildcard" in self._refused(rsa_lab, make_csr(subject=name("*.corp.test")))

    @pytest.mark.parametrize(
        ("san", "kind"),
        [(x509.UniformResourceIdentifier(INTUNE_SID_URI), "SID"), (upn("a@corp.test"), "UPN")],
    )
    def test_account_sans_need_a_provider_that_vouches(
        self, rsa_lab: CaMaterial, san: x509.GeneralName, kind: str
    ) -> None:
        assert kind in self._refused(rsa_lab, make_csr(sans=[san]))
        vouched = issue_certificate(
            csr=make_csr(sans=[san]),
            ca=rsa_lab.ca,
            profile=CertificateProfile(),
            serial=new_serial(),
            names_vouched=True,
        )
        assert list(vouched.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)

    def test_each_is_a_profile_setting(self, rsa_lab: CaMaterial) -> None:
        profile = CertificateProfile.from_names(
            allow_wildcard_dns=True,
            allow_control_characters=True,
            allow_ca_subject=True,
            vouched_san_types=[],
        )
        for csr in (
            make_csr(subject=name("a\x00b")),
            make_csr(subject=rsa_lab.ca.certificate.subject),
            make_csr(sans=[x509.DNSName("*.corp.test")]),
            make_csr(sans=[x509.UniformResourceIdentifier(INTUNE_SID_URI)]),
        ):
            issue_certificate(csr=csr, ca=rsa_lab.ca, profile=profile, serial=new_serial())
        with pytest.raises(ProfileNameError, match="vouched"):
            CertificateProfile.from_names(vouched_san_types=["upn", "guid"])


class TestRenewalKeepsTheIdentity:
    @staticmethod
    def _issued(lab: CaMaterial, csr: x509.CertificateSigningRequest) -> x509.Certificate:
        return _issue(lab, csr, CertificateProfile())

    def test_same_subject_and_sans_or_fewer(self, rsa_lab: CaMaterial) -> None:
        names = [x509.DNSName("a.corp.test"), x509.DNSName("b.corp.test")]
        held = self._issued(rsa_lab, make_csr(sans=names))
        profile = CertificateProfile()
        assert profile.renewal_changes(make_csr(sans=names), held, exact_sans=False) is None
        assert profile.renewal_changes(make_csr(sans=names[:1]), held, exact_sans=False) is None
        assert "exact" in str(
            profile.renewal_changes(make_csr(sans=names[:1]), held, exact_sans=True)
        )

    def test_another_subject_or_an_added_name_is_a_change(self, rsa_lab: CaMaterial) -> None:
        held = self._issued(rsa_lab, make_csr(subject=name("device-a")))
        profile = CertificateProfile()
        other = profile.renewal_changes(make_csr(subject=name("device-b")), held, exact_sans=False)
        assert "subject" in str(other)
        added = make_csr(subject=name("device-a"), sans=[x509.DNSName("admin.corp.test")])
        assert "admin.corp.test" in str(profile.renewal_changes(added, held, exact_sans=False))

    def test_names_the_profile_drops_do_not_count(self, rsa_lab: CaMaterial) -> None:
        profile = CertificateProfile(allowed_san_types={"dns"})  # type: ignore[arg-type]
        csr = make_csr(sans=[x509.DNSName("a.corp.test"), x509.RFC822Name("a@corp.test")])
        held = _issue(rsa_lab, csr, profile)
        assert profile.renewal_changes(csr, held, exact_sans=True) is None

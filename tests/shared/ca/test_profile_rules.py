"""Profile rules an endpoint may set (docs/endpoints.md): EKUs taken from the
CSR within an allowed set, required SAN types and subject attributes, and
patterns every SAN or subject attribute of a type must match."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from scepline_shared.ca import CertificateProfile, PolicyViolation
from scepline_shared.ca.profile import ProfileNameError, parse_extended_key_usage

from ._pki import make_csr, name

IKE = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.17")


@pytest.mark.parametrize(
    "spelling", ["clientAuth", "client_auth", "client-auth", "id-kp-clientAuth", "CLIENT_AUTH"]
)
def test_eku_names_are_read_in_every_spelling(spelling: str) -> None:
    assert parse_extended_key_usage([spelling]) == (ExtendedKeyUsageOID.CLIENT_AUTH,)


def test_ocsp_signing_and_ipsec_ike_in_rfc_spelling() -> None:
    assert parse_extended_key_usage(["OCSPSigning", "ipsecIKE"]) == (
        ExtendedKeyUsageOID.OCSP_SIGNING,
        IKE,
    )


def test_ekus_asked_for_within_the_allowed_set_are_issued() -> None:
    profile = CertificateProfile.from_names(
        extended_key_usage=["clientAuth"], csr_extended_key_usage=["serverAuth", "ipsecIKE"]
    )
    asking = make_csr(extra=[x509.ExtendedKeyUsage([IKE, ExtendedKeyUsageOID.SERVER_AUTH])])
    outside = make_csr(extra=[x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING])])

    assert profile.issued_extended_key_usage(asking) == (IKE, ExtendedKeyUsageOID.SERVER_AUTH)
    assert profile.issued_extended_key_usage(make_csr()) == (ExtendedKeyUsageOID.CLIENT_AUTH,)
    with pytest.raises(PolicyViolation, match="code_signing, which the profile does not allow"):
        profile.issued_extended_key_usage(outside)


def test_without_an_allowed_set_the_csr_asks_for_nothing() -> None:
    asking = make_csr(extra=[x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING])])

    assert CertificateProfile().issued_extended_key_usage(asking) == (
        ExtendedKeyUsageOID.CLIENT_AUTH,
    )


def test_required_names_and_patterns() -> None:
    profile = CertificateProfile.from_names(
        san_types=["dns", "email"],
        required_san_types=["dns"],
        san_patterns={"dns": r"[a-z0-9-]+\.example\.com"},
        required_subject_attributes=["CN", "organizationName"],
        subject_patterns={"commonName": "[a-z0-9-]+"},
    )
    subject = name("web-1", o="Example")
    good = [x509.DNSName("web-1.example.com"), x509.RFC822Name("ops@elsewhere.org")]

    profile.check_rules(subject, good)
    refusals = {
        "needs a dns SAN": (subject, [x509.RFC822Name("ops@example.com")]),
        "does not match the profile's pattern": (subject, [x509.DNSName("evil.org")]),
        "needs a O attribute": (name("web-1"), good),
        "subject CN 'Web 1'": (name("Web 1", o="Example"), good),
    }
    for says, (who, sans) in refusals.items():
        with pytest.raises(PolicyViolation, match=says):
            profile.check_rules(who, sans)


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"required_san_types": ["dns"], "san_types": ["email"]}, "required_san_types"),
        ({"san_patterns": {"x400": ".*"}}, "san_patterns"),
        ({"san_patterns": {"dns": "("}}, "san_patterns"),
        ({"subject_patterns": {"shoe_size": ".*"}}, "subject_patterns"),
        ({"required_subject_attributes": ["shoe_size"]}, "required_subject_attributes"),
        ({"csr_extended_key_usage": ["teleport"]}, "csr_extended_key_usage"),
    ],
)
def test_unknown_names_say_which_argument(arguments: dict[str, object], field: str) -> None:
    with pytest.raises(ProfileNameError) as caught:
        CertificateProfile.from_names(**arguments)  # type: ignore[arg-type]

    assert caught.value.field == field

"""profile_from / build_crl_publisher: settings become a profile, or a start-up error
that names the environment variable to fix."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from scepline_shared.ca import CertificateProfile
from scepline_shared.configured import profile_from
from scepline_shared.settings import Settings
from scepline_shared.store import RequestRepository
from scepline_signer.main import build_crl_publisher, build_handler

from .pki import file_ca


def test_default_settings_give_the_default_profile() -> None:
    assert profile_from(Settings()) == CertificateProfile()


def test_settings_as_operators_write_them() -> None:
    # Environment values arrive as comma-separated text.
    settings = Settings(
        cert_validity_days="90",
        cert_key_usage="digital_signature",
        cert_extended_key_usage="client_auth, smartcard_logon, 1.3.6.1.4.1.311.10.3.4",
        cert_san_types="dns,upn,uri",
        cert_on_disallowed_san="refuse",
        cert_copy_subject="false",
        cert_key_types="rsa,P-384",
        cert_min_rsa_bits="3072",
        cert_max_rsa_bits="4096",
    )
    profile = profile_from(settings)
    assert profile.validity_days == 90
    assert profile.key_usage.digital_signature and not profile.key_usage.key_encipherment
    assert profile.extended_key_usage == (
        ExtendedKeyUsageOID.CLIENT_AUTH,
        x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.2"),
        x509.ObjectIdentifier("1.3.6.1.4.1.311.10.3.4"),
    )
    assert profile.allowed_san_types == {"dns", "upn", "uri"}
    assert profile.on_disallowed_san == "refuse"
    assert not profile.copy_subject
    assert profile.allowed_key_types == {"rsa", "P-384"}
    assert (profile.min_rsa_bits, profile.max_rsa_bits) == (3072, 4096)


@pytest.mark.parametrize(
    ("setting", "value", "variable"),
    [
        ("cert_key_usage", "digital_signature,keyCertSign", "SCEPLINE_CERT_KEY_USAGE"),
        ("cert_key_usage", "digital_signatures", "SCEPLINE_CERT_KEY_USAGE"),
        ("cert_extended_key_usage", "client_auth,vpn", "SCEPLINE_CERT_EXTENDED_KEY_USAGE"),
        ("cert_san_types", "dns,ldap", "SCEPLINE_CERT_SAN_TYPES"),
        ("cert_key_types", "rsa,ed25519", "SCEPLINE_CERT_KEY_TYPES"),
        ("cert_max_rsa_bits", "2048", "SCEPLINE_CERT_MAX_RSA_BITS"),  # below the 4096 minimum
    ],
)
def test_a_bad_name_stops_start_up_naming_the_variable(
    setting: str, value: str, variable: str, repository: RequestRepository
) -> None:
    extra = {"cert_min_rsa_bits": "4096"} if setting == "cert_max_rsa_bits" else {}
    settings = Settings(**{setting: value, **extra})
    with pytest.raises(ValueError, match=rf"^{variable}: ") as caught:
        profile_from(settings)
    assert value.split(",")[-1] in str(caught.value) or "below" in str(caught.value)
    with pytest.raises(ValueError, match=variable):  # build_handler builds the profile up front
        build_handler(settings, repository, file_ca)


def test_crl_publisher_from_settings(repository: RequestRepository) -> None:
    ca = file_ca()
    settings = Settings(crl_validity_hours=12, crl_check_interval_seconds=5)
    publisher = build_crl_publisher(settings, repository, lambda: [ca])
    assert (publisher.validity, publisher.interval) == (timedelta(hours=12), 5)
    assert list(publisher.cas()) == [ca]

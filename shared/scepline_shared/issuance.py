"""The issuance policy from settings: one certificate profile that the
validator (comparing a renewal with the certificate it renews) and the signer
(issuing) both apply."""

from __future__ import annotations

from .ca import CertificateProfile
from .ca.profile import ProfileNameError
from .settings import Settings

__all__ = ["profile_from"]

# CertificateProfile.from_names argument -> the Settings field it comes from.
_SETTING_FOR: dict[str, str] = {
    "validity_days": "cert_validity_days",
    "key_usage": "cert_key_usage",
    "extended_key_usage": "cert_extended_key_usage",
    "san_types": "cert_san_types",
    "on_disallowed_san": "cert_on_disallowed_san",
    "copy_subject": "cert_copy_subject",
    "key_types": "cert_key_types",
    "min_rsa_bits": "cert_min_rsa_bits",
    "max_rsa_bits": "cert_max_rsa_bits",
    "allow_wildcard_dns": "cert_allow_wildcard_dns",
    "allow_control_characters": "cert_allow_control_characters",
    "allow_ca_subject": "cert_allow_ca_subject",
    "vouched_san_types": "cert_vouched_san_types",
}


def profile_from(settings: Settings) -> CertificateProfile:
    """The issuance profile from SCEPLINE_CERT_* settings.

    Raises ValueError naming the environment variable at fault, so a typo in an
    EKU or key-usage name stops the process at start-up instead of at the first
    enrolment.
    """
    try:
        return CertificateProfile.from_names(
            **{argument: getattr(settings, field) for argument, field in _SETTING_FOR.items()}
        )
    except ProfileNameError as error:
        variable = f"SCEPLINE_{_SETTING_FOR[error.field].upper()}"
        raise ValueError(f"{variable}: {error.detail}") from None
    except ValueError as error:
        raise ValueError(f"SCEPLINE_CERT_* certificate profile: {error}") from None

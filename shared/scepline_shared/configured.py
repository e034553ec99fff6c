"""What settings configure, built once: the key source (files or a PKCS#11
token) and the certificate profile. The CA package itself knows no settings;
the processes build its inputs here.

The profile is one issuance policy that the validator (comparing a renewal with
the certificate it renews) and the signer (issuing) both apply."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from .ca import CertificateProfile
from .ca.keysource import KeySource
from .ca.profile import ProfileNameError
from .keys import SigningKey
from .keys.pkcs11 import Pkcs11Config, Pkcs11KeyRef, Pkcs11PrivateKey, Pkcs11Token
from .ocsp.directory import ResponderDirectory
from .ocsp.http import ocsp_routes
from .ocsp.responder import CertificateStatuses, OcspResponder
from .settings import Settings

__all__ = ["key_source", "ocsp_routes_from", "profile_from"]

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


def key_source(settings: Settings) -> KeySource:
    """The key source ``settings`` describe; builds the token but opens nothing.

    Opening is left to first use so that each worker process logs in after it
    forked. The PIN is read now, from the file if one is configured, and lives
    only in the token's config.
    """
    labels = {
        "ca_key_label": settings.pkcs11_ca_key_label,
        "ra_key_label": settings.pkcs11_ra_key_label,
        "ra_in_token": settings.pkcs11_ra_in_token,
        "ocsp_key_label": settings.pkcs11_ocsp_key_label,
    }
    if settings.key_backend == "file":
        return KeySource(backend="file", **labels)
    if not settings.pkcs11_module or not settings.pkcs11_token_label:
        raise ValueError("the pkcs11 key backend needs pkcs11_module and pkcs11_token_label")
    config = Pkcs11Config(
        module=settings.pkcs11_module,
        token_label=settings.pkcs11_token_label,
        pin=settings.pkcs11_user_pin(),
        ca_key=Pkcs11KeyRef(label=settings.pkcs11_ca_key_label),
        ra_key=(
            Pkcs11KeyRef(label=settings.pkcs11_ra_key_label)
            if settings.pkcs11_ra_in_token
            else None
        ),
    )
    return KeySource(backend="pkcs11", token=Pkcs11Token(config), **labels)


def ocsp_routes_from(settings: Settings, statuses: CertificateStatuses) -> APIRouter:
    """``POST /ocsp`` and ``GET /ocsp/...`` answering from ``statuses`` (the store)
    for the CAs under SCEPLINE_DATA_DIR, as SCEPLINE_OCSP_* configure."""
    responder = OcspResponder(
        statuses,
        ResponderDirectory(settings.data_dir, key_source(settings), signing=settings.ocsp_signing),
        check_interval=timedelta(seconds=settings.crl_check_interval_seconds),
        response_validity=timedelta(seconds=settings.ocsp_response_validity_seconds),
        cache_entries=settings.ocsp_cache_entries,
        sign_off_loop=_in_token,
    )
    return ocsp_routes(
        responder,
        max_request_bytes=settings.ocsp_max_request_bytes,
        body_timeout_seconds=settings.http_body_timeout_seconds,
    )


def _in_token(key: SigningKey) -> bool:
    # A token signature waits on the HSM: off the event loop.
    return isinstance(key, Pkcs11PrivateKey)

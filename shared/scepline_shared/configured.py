"""What settings configure, built once: the key source (files or a PKCS#11
token), the certificate profile and the SCEP endpoints. The CA package itself
knows no settings; the processes build its inputs here.

A profile is one issuance policy that the validator (comparing a renewal with
the certificate it renews) and the signer (issuing) both apply; each endpoint
has its own (``endpoints_from``)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi import APIRouter

from .ca import CertificateProfile
from .ca.keysource import KeySource
from .ca.profile import ProfileNameError
from .config_file import (
    DEFAULT_ENDPOINT,
    ConfigError,
    ConfigFile,
    EndpointConfig,
    ProfileConfig,
    load_config,
    scep_path,
)
from .endpoints import Endpoint, Endpoints
from .keys import SigningKey
from .keys.pkcs11 import Pkcs11Config, Pkcs11KeyRef, Pkcs11PrivateKey, Pkcs11Token
from .ocsp.directory import ResponderDirectory
from .ocsp.http import ocsp_routes
from .ocsp.responder import CertificateStatuses, OcspResponder
from .settings import Settings

__all__ = [
    "default_endpoint",
    "endpoints_from",
    "key_source",
    "ocsp_routes_from",
    "profile_from",
    "profile_from_config",
]

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


def profile_from_config(profile: ProfileConfig) -> CertificateProfile:
    """An endpoint's issuance profile from its ``[endpoints.NAME.profile]``
    (checked when the file was read; ProfileNameError names the key otherwise)."""
    return CertificateProfile.from_names(
        validity_days=profile.validity_days,
        key_usage=profile.key_usage,
        extended_key_usage=profile.extended_key_usage,
        csr_extended_key_usage=profile.extended_key_usage_from_csr,
        san_types=profile.san_types,
        required_san_types=profile.required_san_types,
        san_patterns=profile.san_patterns,
        on_disallowed_san=profile.on_disallowed_san,
        copy_subject=profile.copy_subject,
        required_subject_attributes=profile.required_subject_attributes,
        subject_patterns=profile.subject_patterns,
        key_types=profile.key_types,
        min_rsa_bits=profile.min_rsa_bits,
        max_rsa_bits=profile.max_rsa_bits,
        allow_wildcard_dns=profile.allow_wildcard_dns,
        allow_control_characters=profile.allow_control_characters,
        allow_ca_subject=profile.allow_ca_subject,
        vouched_san_types=profile.vouched_san_types,
    )


def default_endpoint(settings: Settings) -> Endpoint:
    """The endpoint the SCEPLINE_* settings describe, at ``/scep``: what a
    deployment without a configuration file serves."""
    return Endpoint(
        name=DEFAULT_ENDPOINT,
        provider=settings.challenge_provider,
        profile=profile_from(settings),
        static_challenge=(
            None
            if settings.static_challenge is None
            else settings.static_challenge.get_secret_value()
        ),
        exact_renewal_sans=settings.renewal_san_match == "exact",
        paths=("/scep",),
    )


def endpoints_from(settings: Settings) -> Endpoints:
    """Every endpoint: the file's (SCEPLINE_CONFIG), and the default one of the
    settings at /scep unless the file's ``default_endpoint`` says otherwise.

    Raises ConfigError (every mistake of the file, one line each) or ValueError
    (a SCEPLINE_CERT_* name the default profile does not know)."""
    if settings.config is None:
        return Endpoints({DEFAULT_ENDPOINT: default_endpoint(settings)}, default=DEFAULT_ENDPOINT)
    config = load_config(settings.config)
    return _from_file(settings, settings.config, config)


def _from_file(settings: Settings, path: Path, config: ConfigFile) -> Endpoints:
    by_name: dict[str, Endpoint] = {}
    default = config.default_endpoint
    if default is None:
        by_name[DEFAULT_ENDPOINT] = default_endpoint(settings)
        default = DEFAULT_ENDPOINT
    problems: list[str] = []
    for name, endpoint in config.endpoints.items():
        paths = (scep_path(name), *endpoint.paths)
        if name == default:
            paths = ("/scep", *paths)
        if endpoint.challenge == "intune":
            problem = settings.intune_problem('challenge = "intune" (docs/intune.md)')
            if problem is not None:
                problems.append(f"endpoints.{name}.challenge: {problem}")
        try:
            by_name[name] = _endpoint(name, endpoint, paths)
        except ProfileNameError as error:
            problems.append(f"endpoints.{name}.profile.{error.field}: {error.detail}")
        except ValueError as error:
            problems.append(f"endpoints.{name}: {error}")
    if problems:
        raise ConfigError(path, problems)
    return Endpoints(by_name, default=default or None)


def _endpoint(name: str, config: EndpointConfig, paths: tuple[str, ...]) -> Endpoint:
    return Endpoint(
        name=name,
        provider=config.challenge,
        profile=profile_from_config(config.profile),
        static_challenge=_static_challenge(config),
        challenge_ttl=config.challenge_ttl,
        approval_ttl=timedelta(hours=config.approval_ttl_hours),
        renewal=config.renewal,
        exact_renewal_sans=config.renewal_san_match == "exact",
        ca=config.ca,
        paths=paths,
    )


def _static_challenge(config: EndpointConfig) -> str | None:
    if config.static_challenge is not None:
        value = config.static_challenge.get_secret_value()
    elif config.static_challenge_file is not None:
        try:
            value = config.static_challenge_file.read_text().strip()
        except OSError as error:
            raise ValueError(
                f"static_challenge_file {config.static_challenge_file}: cannot be read "
                f"({error.strerror or error})"
            ) from None
    else:
        return None
    if not value:
        raise ValueError("the static challenge is empty")
    return value


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

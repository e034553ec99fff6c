"""What settings configure, built once: the key source (files or a PKCS#11
token), the certificate profile and the SCEP endpoints. The CA package itself
knows no settings; the processes build its inputs here.

A profile is one issuance policy that the validator (comparing a renewal with
the certificate it renews) and the signer (issuing) both apply; each endpoint
has its own (``endpoints_from``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path

from .ca import CertificateProfile
from .ca.keysource import KeySource
from .ca.profile import ProfileNameError
from .config_file import (
    DEFAULT_CA,
    DEFAULT_ENDPOINT,
    CaConfig,
    ConfigError,
    ConfigFile,
    EndpointConfig,
    ProfileConfig,
    load_config,
    scep_path,
)
from .endpoints import CaSpec, Endpoint, Endpoints
from .intune.config import CertificateCredential, IntuneConfig, default_caller_info
from .intune.errors import IntuneConfigurationError
from .keys import SigningKey
from .keys.pkcs11 import Pkcs11Config, Pkcs11KeyRef, Pkcs11PrivateKey, Pkcs11Token
from .ocsp.directory import ResponderDirectory
from .ocsp.http import OcspHttp
from .ocsp.responder import CertificateStatuses, OcspIssuer, OcspResponder
from .settings import Settings

__all__ = [
    "ca_root",
    "default_ca",
    "default_endpoint",
    "endpoints_from",
    "intune_config_for",
    "key_source",
    "ocsp_http_from",
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
        return Endpoints(
            {DEFAULT_ENDPOINT: default_endpoint(settings)},
            default=DEFAULT_ENDPOINT,
            cas={DEFAULT_CA: default_ca(settings)},
        )
    config = load_config(settings.config)
    return _from_file(settings, settings.config, config)


def default_ca(settings: Settings) -> CaSpec:
    """The CA under SCEPLINE_DATA_DIR/ca, as the SCEPLINE_CA_* settings describe it."""
    return CaSpec(
        name=DEFAULT_CA,
        common_name=settings.ca_common_name,
        ra_common_name=settings.ra_common_name,
        key_type=settings.ca_key_type,
        key_size=settings.ca_key_size,
        validity_days=settings.ca_validity_days,
    )


def _named_ca(name: str, config: CaConfig) -> CaSpec:
    return CaSpec(
        name=name,
        common_name=config.common_name or f"scepline {name} CA",
        ra_common_name=config.ra_common_name or f"scepline {name} RA",
        key_type=config.key_type,
        key_size=config.key_size,
        validity_days=config.validity_days,
    )


def ca_root(data_dir: Path, ca: str) -> Path:
    """The directory whose ``ca/`` holds CA ``ca``'s generations: the data
    directory for the default CA, ``cas/NAME`` under it for a named one."""
    return data_dir if ca == DEFAULT_CA else data_dir / "cas" / ca


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
        if endpoint.challenge == "intune" and endpoint.intune is None:
            problem = settings.intune_problem(
                'challenge = "intune" without an [intune] table (docs/intune.md)'
            )
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
    cas = {DEFAULT_CA: default_ca(settings)}
    cas.update((name, _named_ca(name, ca)) for name, ca in config.cas.items())
    return Endpoints(by_name, default=default or None, cas=cas)


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
        enrolments_per_minute=config.limits.enrolments_per_minute,
        max_awaiting_approval=config.limits.max_awaiting_approval,
        sync_wait_seconds=config.limits.sync_wait_seconds,
        intune=config.intune,
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


def intune_config_for(settings: Settings, endpoint: Endpoint) -> IntuneConfig:
    """The Intune client configuration of an ``intune`` endpoint: its own
    ``[intune]`` table over the SCEPLINE_INTUNE_* settings, or those alone.
    Raises IntuneConfigurationError (a secret or certificate file unreadable)."""
    tenant = endpoint.intune
    if tenant is None:
        return IntuneConfig.from_settings(settings)
    secret = None
    certificate = None
    if tenant.client_secret is not None:
        secret = tenant.client_secret.get_secret_value()
    elif tenant.client_secret_file is not None:
        try:
            secret = tenant.client_secret_file.read_text().strip()
        except OSError as error:
            raise IntuneConfigurationError(
                f"endpoint {endpoint.name}: cannot read client_secret_file "
                f"{tenant.client_secret_file} ({error.strerror or error})"
            ) from None
    elif tenant.client_certificate_file and tenant.client_key_file:
        certificate = CertificateCredential.from_files(
            tenant.client_certificate_file, tenant.client_key_file
        )
    return IntuneConfig(
        tenant=tenant.tenant,
        client_id=tenant.client_id,
        client_secret=secret,
        client_certificate=certificate,
        authority_url=tenant.authority_url or settings.intune_authority_url,
        graph_url=tenant.graph_url or settings.intune_graph_url,
        graph_resource_url=tenant.graph_resource_url or settings.intune_graph_resource_url,
        resource_url=tenant.resource_url or settings.intune_resource_url,
        ca_bundle=tenant.ca_bundle or settings.intune_ca_bundle,
        timeout_seconds=settings.intune_timeout_seconds,
        retry_budget_seconds=settings.intune_retry_budget_seconds,
        discovery_ttl_seconds=settings.intune_discovery_ttl_seconds,
        caller_info=settings.intune_caller_info or default_caller_info(),
    )


def key_source(settings: Settings, ca: str = DEFAULT_CA) -> KeySource:
    """The key source ``settings`` describe for CA ``ca``; builds the token but
    opens nothing. A named CA's token labels end in ``-NAME`` (``scepline-ca-corp``).

    Opening is left to first use so that each worker process logs in after it
    forked. The PIN is read now, from the file if one is configured, and lives
    only in the token's config.
    """
    suffix = "" if ca == DEFAULT_CA else f"-{ca}"
    labels = {
        "ca_key_label": settings.pkcs11_ca_key_label + suffix,
        "ra_key_label": settings.pkcs11_ra_key_label + suffix,
        "ra_in_token": settings.pkcs11_ra_in_token,
        "ocsp_key_label": settings.pkcs11_ocsp_key_label + suffix,
    }
    if settings.key_backend == "file":
        return KeySource(backend="file", **labels)
    if not settings.pkcs11_module or not settings.pkcs11_token_label:
        raise ValueError("the pkcs11 key backend needs pkcs11_module and pkcs11_token_label")
    config = Pkcs11Config(
        module=settings.pkcs11_module,
        token_label=settings.pkcs11_token_label,
        pin=settings.pkcs11_user_pin(),
        ca_key=Pkcs11KeyRef(label=labels["ca_key_label"]),
        ra_key=(
            Pkcs11KeyRef(label=labels["ra_key_label"]) if settings.pkcs11_ra_in_token else None
        ),
    )
    return KeySource(backend="pkcs11", token=Pkcs11Token(config), **labels)


def ocsp_http_from(
    settings: Settings, statuses: CertificateStatuses, cas: Iterable[str] = (DEFAULT_CA,)
) -> OcspHttp:
    """``POST /ocsp`` and ``GET /ocsp/...`` answering from ``statuses`` (the store)
    for the CAs ``cas`` under SCEPLINE_DATA_DIR, as SCEPLINE_OCSP_* configure."""
    directories = [
        ResponderDirectory(
            ca_root(settings.data_dir, ca), key_source(settings, ca), signing=settings.ocsp_signing
        )
        for ca in cas
    ]
    responder = OcspResponder(
        statuses,
        directories[0] if len(directories) == 1 else _Together(directories),
        check_interval=timedelta(seconds=settings.crl_check_interval_seconds),
        response_validity=timedelta(seconds=settings.ocsp_response_validity_seconds),
        cache_entries=settings.ocsp_cache_entries,
        sign_off_loop=_in_token,
    )
    return OcspHttp(
        responder,
        max_request_bytes=settings.ocsp_max_request_bytes,
        body_timeout_seconds=settings.http_body_timeout_seconds,
    )


class _Together:
    """Several CA directories' issuers as one, the same tuple object until one
    of them changed (the responder re-indexes its issuers only then)."""

    def __init__(self, directories: Sequence[ResponderDirectory]) -> None:
        self._directories = tuple(directories)
        self._parts: tuple[Sequence[OcspIssuer], ...] = ()
        self._issuers: tuple[OcspIssuer, ...] = ()

    def __call__(self) -> Sequence[OcspIssuer]:
        parts = tuple(directory() for directory in self._directories)
        if len(parts) != len(self._parts) or any(
            now is not before for now, before in zip(parts, self._parts, strict=True)
        ):
            self._parts = parts
            self._issuers = tuple(issuer for part in parts for issuer in part)
        return self._issuers


def _in_token(key: SigningKey) -> bool:
    # A token signature waits on the HSM: off the event loop.
    return isinstance(key, Pkcs11PrivateKey)

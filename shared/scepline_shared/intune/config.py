"""Everything the Intune client needs to know, built once from settings.

Secrets are read here (from the setting or its file) and kept out of every
``repr``, so a config object in a traceback or a log line gives nothing away.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..settings import Settings
from .errors import IntuneConfigurationError

__all__ = [
    "INTUNE_APP_ID",
    "PKI_API_VERSION",
    "PKI_SERVICE",
    "SCEP_API_VERSION",
    "SCEP_SERVICE",
    "CertificateCredential",
    "IntuneConfig",
    "default_caller_info",
]

# The Intune first-party service principal whose endpoints Graph lists
# (docs/specs/intune-api.md, "Service discovery").
INTUNE_APP_ID = "0000000a-0000-0000-c000-000000000000"
SCEP_SERVICE = "ScepRequestValidationFEService"
SCEP_API_VERSION = "2018-02-20"
# Revocation requests for the CA (docs/specs/intune-api.md, "Revocation requests"):
# its own service and api-version.
PKI_SERVICE = "PkiConnectorFEService"
PKI_API_VERSION = "5019-05-05"


def default_caller_info() -> str:
    try:
        version = metadata.version("scepline")
    except metadata.PackageNotFoundError:
        version = "0"
    return f"scepline/{version}"


@dataclass(frozen=True)
class CertificateCredential:
    """A client certificate (PEM, leaf first) and its unencrypted PEM private key."""

    certificate_pem: str
    private_key_pem: str = field(repr=False)

    @classmethod
    def from_files(cls, certificate_file: Path, key_file: Path) -> CertificateCredential:
        try:
            certificate_pem = certificate_file.read_text()
            key_pem = key_file.read_text()
            x509.load_pem_x509_certificate(certificate_pem.encode())
            serialization.load_pem_private_key(key_pem.encode(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            # The message names the files, never their contents.
            raise IntuneConfigurationError(
                f"cannot use the Intune client certificate {certificate_file} with key "
                f"{key_file}: {type(exc).__name__}"
            ) from None
        return cls(certificate_pem, key_pem)


@dataclass(frozen=True)
class IntuneConfig:
    tenant: str
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    client_certificate: CertificateCredential | None = None
    authority_url: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com"
    graph_resource_url: str | None = None
    resource_url: str = "https://api.manage.microsoft.com/"
    ca_bundle: Path | None = None
    timeout_seconds: float = 10.0
    retry_budget_seconds: float = 10.0
    # HTTP tries of one call within the budget (pimptune: 1 + 2 retries).
    max_attempts: int = 3
    discovery_ttl_seconds: float = 1800.0
    caller_info: str = field(default_factory=default_caller_info)
    api_version: str = SCEP_API_VERSION

    def __post_init__(self) -> None:
        if (self.client_secret is None) == (self.client_certificate is None):
            raise IntuneConfigurationError(
                "the Intune client needs a client secret or a client certificate (one of them)"
            )

    @property
    def authority(self) -> str:
        return f"{self.authority_url.rstrip('/')}/{self.tenant}"

    @property
    def intune_scope(self) -> str:
        # Resource URI exactly, then "/.default": "https://api.manage.microsoft.com/"
        # gives the double slash every reference client sends
        # (docs/specs/intune-api.md, "Authentication").
        return f"{self.resource_url}/.default"

    @property
    def graph_scope(self) -> str:
        return f"{(self.graph_resource_url or self.graph_url).rstrip('/')}/.default"

    @property
    def endpoints_url(self) -> str:
        return (
            f"{self.graph_url.rstrip('/')}/v1.0/servicePrincipals/appId={INTUNE_APP_ID}/endpoints"
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> IntuneConfig:
        if not settings.intune_tenant or not settings.intune_client_id:
            raise IntuneConfigurationError("SCEPLINE_INTUNE_TENANT and _CLIENT_ID are required")
        secret: str | None = None
        certificate: CertificateCredential | None = None
        if settings.intune_client_secret is not None:
            secret = settings.intune_client_secret.get_secret_value()
        elif settings.intune_client_secret_file is not None:
            secret = _read_secret(settings.intune_client_secret_file)
        elif settings.intune_client_certificate_file and settings.intune_client_key_file:
            certificate = CertificateCredential.from_files(
                settings.intune_client_certificate_file, settings.intune_client_key_file
            )
        return cls(
            tenant=settings.intune_tenant,
            client_id=settings.intune_client_id,
            client_secret=secret,
            client_certificate=certificate,
            authority_url=settings.intune_authority_url,
            graph_url=settings.intune_graph_url,
            graph_resource_url=settings.intune_graph_resource_url,
            resource_url=settings.intune_resource_url,
            ca_bundle=settings.intune_ca_bundle,
            timeout_seconds=settings.intune_timeout_seconds,
            retry_budget_seconds=settings.intune_retry_budget_seconds,
            discovery_ttl_seconds=settings.intune_discovery_ttl_seconds,
            caller_info=settings.intune_caller_info or default_caller_info(),
        )


def _read_secret(path: Path) -> str:
    try:
        # Editors and `echo` add a final newline; it is never part of an Entra secret.
        secret = path.read_text().strip()
    except OSError as exc:
        raise IntuneConfigurationError(
            f"cannot read SCEPLINE_INTUNE_CLIENT_SECRET_FILE {path}: {exc.strerror}"
        ) from None
    if not secret:
        raise IntuneConfigurationError(f"SCEPLINE_INTUNE_CLIENT_SECRET_FILE {path} is empty")
    return secret

"""All configuration, read once from the environment (prefix ``SCEPLINE_``).

Settings are built in ``main()`` (or a test) and passed down; nothing reads the
environment at import time, so one process can run every service (``scepline
up``) and tests can build as many configurations as they like.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SCEPLINE_", env_file=None, extra="forbid", validate_default=True
    )

    # Where the lab CA/RA and the default SQLite database live.
    data_dir: Path = Path("var")

    # HTTP binding of the SCEP endpoint.
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=1, le=65535)
    # Largest PKIOperation body (POST) or decoded GET message we read.
    http_max_body_bytes: int = Field(default=64 * 1024, ge=1024)

    # State store: SQLite file under data_dir unless set (postgresql://… works too).
    database_url: str | None = None
    # Connections each process keeps (and may add under load): keep the sum over
    # all processes below PostgreSQL's max_connections (100 by default).
    database_pool_size: int = Field(default=8, ge=1)
    database_max_overflow: int = Field(default=4, ge=0)

    # Challenge provider for enrolment: a static shared secret (labs) or Intune.
    challenge_provider: Literal["static", "intune"] = "static"
    static_challenge: SecretStr | None = None

    # Intune (challenge_provider="intune"; docs/intune.md). The Entra app's tenant
    # (domain or GUID), client id and ONE credential: a secret, a file holding it,
    # or a certificate and its unencrypted PEM key.
    intune_tenant: str | None = None
    intune_client_id: str | None = None
    intune_client_secret: SecretStr | None = None
    intune_client_secret_file: Path | None = None
    intune_client_certificate_file: Path | None = None
    intune_client_key_file: Path | None = None
    # Endpoints; change them for a sovereign cloud or the simulator. The authority
    # gets "/<tenant>" appended. The Intune scope is the resource URL + "/.default",
    # so the default's trailing slash gives Microsoft's documented double slash.
    intune_authority_url: str = "https://login.microsoftonline.com"
    intune_graph_url: str = "https://graph.microsoft.com"
    # The Graph token's resource id, when it is not the URL Graph is called at.
    intune_graph_resource_url: str | None = None
    intune_resource_url: str = "https://api.manage.microsoft.com/"
    # PEM bundle to trust for Entra, Graph and Intune instead of the system store.
    intune_ca_bundle: Path | None = None
    # One HTTP call, and all retries of one Intune call (the device is waiting).
    intune_timeout_seconds: float = Field(default=10.0, gt=0)
    intune_retry_budget_seconds: float = Field(default=10.0, ge=0)
    intune_discovery_ttl_seconds: float = Field(default=1800.0, gt=0)
    # callerInfo and the UserAgent header; unset: "scepline/<version>".
    intune_caller_info: str | None = None
    # While Intune is unreachable a request is retried; past this age (the device's
    # challenge lives about 60 min) it is rejected instead of waiting on.
    intune_validation_deadline_seconds: float = Field(default=3000.0, gt=0)
    # Release the certificate before Intune acknowledged it (against the letter
    # of Microsoft's guidance; for an Intune that is slow to answer).
    release_before_notify: bool = False

    # RFC 8894 forbids single DES; some clients (Debian's scepclient) still send it.
    scep_allow_des: bool = False
    # How far a request's signingTime may be from our clock before badTime.
    scep_max_clock_skew_seconds: int = Field(default=24 * 3600, ge=60)
    # Put the CA chain after the issued certificate in a SUCCESS CertRep
    # (Cisco wants it, Juniper refuses it).
    scep_certrep_include_chain: bool = False

    # Message broker: "memory://" (in-process, one machine) or "amqp://user:pass@host/vhost".
    broker_url: str = "memory://"
    # Prefix of every exchange and queue, so several deployments can share a vhost.
    broker_namespace: str = "scepline"
    # Unacknowledged messages a worker holds at once.
    worker_prefetch: int = Field(default=32, ge=1, le=1000)
    # Deliveries of one step before its message goes to the dead-letter queue.
    retry_max_attempts: int = Field(default=6, ge=1)
    retry_base_delay_seconds: float = Field(default=1.0, gt=0)
    # Worker processes serve /healthz, /readyz and /metrics here (unset: none).
    health_port: int | None = Field(default=None, ge=0, le=65535)
    # Requests untouched this long (and not dead-lettered) are re-queued.
    sweep_stale_after_seconds: float = Field(default=60.0, gt=0)
    sweep_interval_seconds: float = Field(default=30.0, gt=0)

    # How long ingress holds a PKIOperation open waiting for the pipeline's
    # outcome before it answers PENDING.
    sync_wait_seconds: float = Field(default=20.0, ge=0)

    # The lab CA created by `scepline ca init` / `scepline up` on first run.
    ca_key_type: Literal["rsa", "ec"] = "rsa"
    # RSA modulus bits, or the EC curve size (256 or 384); unset: 3072 / 256.
    ca_key_size: int | None = None

    # Issued certificate profile.
    cert_validity_days: int = Field(default=365, ge=1)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @field_validator("intune_authority_url", "intune_graph_url", "intune_resource_url")
    @classmethod
    def _https(cls, value: str) -> str:
        # MSAL refuses anything else; Graph and Intune carry bearer tokens.
        if not value.lower().startswith("https://"):
            raise ValueError("must be an https:// URL")
        return value

    @model_validator(mode="after")
    def _intune_complete(self) -> Settings:
        if self.challenge_provider != "intune":
            return self
        missing = [
            f"SCEPLINE_{name.upper()}"
            for name in ("intune_tenant", "intune_client_id")
            if not getattr(self, name)
        ]
        if missing:
            raise ValueError(f"SCEPLINE_CHALLENGE_PROVIDER=intune needs {', '.join(missing)}")
        if (self.intune_client_certificate_file is None) != (self.intune_client_key_file is None):
            raise ValueError(
                "SCEPLINE_INTUNE_CLIENT_CERTIFICATE_FILE and SCEPLINE_INTUNE_CLIENT_KEY_FILE "
                "go together"
            )
        credentials = [
            self.intune_client_secret is not None,
            self.intune_client_secret_file is not None,
            self.intune_client_certificate_file is not None,
        ]
        if sum(credentials) != 1:
            raise ValueError(
                "SCEPLINE_CHALLENGE_PROVIDER=intune needs exactly one credential: "
                "SCEPLINE_INTUNE_CLIENT_SECRET, SCEPLINE_INTUNE_CLIENT_SECRET_FILE, or "
                "SCEPLINE_INTUNE_CLIENT_CERTIFICATE_FILE with SCEPLINE_INTUNE_CLIENT_KEY_FILE"
            )
        return self

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'scepline.db'}"

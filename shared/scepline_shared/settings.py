"""All configuration, read once from the environment (prefix ``SCEPLINE_``).

Settings are built in ``main()`` (or a test) and passed down; nothing reads the
environment at import time, so one process can run every service (``scepline
up``) and tests can build as many configurations as they like.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
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

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'scepline.db'}"

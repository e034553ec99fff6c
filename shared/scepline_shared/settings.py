"""All configuration, read once from the environment (prefix ``SCEPLINE_``).

Settings are built in ``main()`` (or a test) and passed down; nothing reads the
environment at import time, so one process can run every service (``scepline
up``) and tests can build as many configurations as they like.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "describe_problems"]

# A list read from one variable as comma-separated names: SCEPLINE_CERT_SAN_TYPES=dns,uri
CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SCEPLINE_", env_file=None, extra="forbid", validate_default=True
    )

    # Where the lab CA/RA and the default SQLite database live.
    data_dir: Path = Path("var")
    # A TOML file of SCEP endpoints (docs/endpoints.md); unset: one endpoint,
    # "default", at /scep, as the settings below describe it.
    config: Path | None = None

    # HTTP binding of the SCEP endpoint.
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=1, le=65535)
    # Largest PKIOperation body (POST) or decoded GET message we read.
    http_max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # Limits of every HTTP server a process starts (SCEP and health ports): a
    # request head larger or with more fields is answered 431; one not complete
    # this long after the connection opened or the request's first byte 408; a
    # PKIOperation body not received this long after its head 408 (a body the app
    # does not read gets as long, then the connection closes). Idle kept-alive
    # connections close after the keep-alive timeout; connections beyond the cap
    # (per port) are answered 503.
    http_max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    http_max_headers: int = Field(default=100, ge=10, le=1000)
    http_header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    http_body_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    http_keepalive_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    http_max_connections: int = Field(default=1024, ge=1, le=100_000)

    # State store: SQLite file under data_dir unless set (postgresql://… works too).
    database_url: str | None = None
    # Connections each process keeps (and may add under load): keep the sum over
    # all processes below PostgreSQL's max_connections (100 by default).
    database_pool_size: int = Field(default=8, ge=1)
    database_max_overflow: int = Field(default=4, ge=0)
    # The key stored CSRs are sealed with (32 random bytes; they carry the device's
    # challenge). Unset: data_dir/store.key, generated on first start. Every process
    # on one store needs the same key; back it up with the database.
    store_key_file: Path | None = None

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
    # How often the notifier asks Intune which certificates to revoke (devices
    # retired, wiped, out of the profile's scope); 0 turns revocation sync off.
    intune_revocation_interval_seconds: float = Field(default=300.0, ge=0)
    # Revocation requests taken per round (Intune allows 1-500).
    intune_revocation_batch: int = Field(default=100, ge=1, le=500)

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
    # Every process serves /healthz, /readyz and /metrics on this port (the
    # operator's, never the SCEP port). Unset: none, except `scepline up`, which
    # serves them on 9100.
    health_host: str = "127.0.0.1"
    health_port: int | None = Field(default=None, ge=0, le=65535)
    # The management API (/api/v1) and the operator console (/): the operator's
    # port, never the SCEP port. `scepline up` serves it (from its supervisor),
    # `scepline admin-api` alone.
    admin_host: str = "127.0.0.1"
    admin_port: int = Field(default=8081, ge=1, le=65535)
    # A console session lasts this long; then the token is asked for again.
    admin_session_minutes: float = Field(default=480.0, gt=0, le=7 * 24 * 60)
    # Wrong tokens (API or login) one address may present within the window;
    # beyond, every attempt from it is answered 429 until the window has passed.
    admin_auth_failures_allowed: int = Field(default=10, ge=1, le=10_000)
    admin_auth_failure_window_seconds: float = Field(default=300.0, gt=0, le=86_400)
    # Serving processes of `scepline up` (each the whole product, sharing the
    # SCEP port and the store); unset: one per core. 1: a single process.
    workers: int | None = Field(default=None, ge=1, le=64)
    # Requests untouched this long (and not dead-lettered) are re-queued.
    sweep_stale_after_seconds: float = Field(default=60.0, gt=0)
    sweep_interval_seconds: float = Field(default=30.0, gt=0)
    # How often ingress reads the queue depths for scepline_queue_messages.
    queue_metrics_interval_seconds: float = Field(default=15.0, gt=0)

    # How long ingress holds a PKIOperation open waiting for the pipeline's
    # outcome before it answers PENDING.
    sync_wait_seconds: float = Field(default=20.0, ge=0)

    # The CA created by `scepline ca init` / `scepline up` on first run (and the
    # next one staged by `scepline ca rollover`). Certificates live under
    # data_dir/ca; the keys beside them (file) or in a PKCS#11 token (pkcs11).
    ca_key_type: Literal["rsa", "ec"] = "rsa"
    # RSA modulus bits, or the EC curve size (256 or 384); unset: 3072 / 256.
    ca_key_size: int | None = None
    ca_common_name: str = "scepline lab CA"
    ra_common_name: str = "scepline lab RA"
    ca_validity_days: int = Field(default=3650, ge=1)

    # Where the CA and RA private keys are: PEM files under data_dir/ca (labs) or
    # a PKCS#11 token (HSM; docs/hsm.md). The token is chosen by label, never by slot.
    key_backend: Literal["file", "pkcs11"] = "file"
    pkcs11_module: str | None = None
    pkcs11_token_label: str | None = None
    # The user PIN: a file (a Docker/k8s/systemd secret) or, for development, the value.
    pkcs11_pin_file: Path | None = None
    pkcs11_pin: SecretStr | None = None
    # CKA_LABEL of the keys `scepline ca init` generates or imports.
    pkcs11_ca_key_label: str = "scepline-ca"
    pkcs11_ra_key_label: str = "scepline-ra"
    # Keep the RA key (which ingress uses for every request) in the token too;
    # false keeps it in data_dir/ca/ra.key while the CA key stays in the token.
    pkcs11_ra_in_token: bool = True
    # CKA_LABEL of the OCSP responder keys (in the token when the RA key is).
    pkcs11_ocsp_key_label: str = "scepline-ocsp"

    # Issued certificate profile (the signer's policy; docs/architecture.md).
    cert_validity_days: int = Field(default=365, ge=1)
    # KeyUsage bits (cryptography's names: digital_signature, key_encipherment, ...).
    cert_key_usage: CommaList = ["digital_signature", "key_encipherment"]
    # EKU: client_auth, server_auth, email_protection, code_signing, ... or dotted OIDs.
    cert_extended_key_usage: CommaList = ["client_auth"]
    # SAN types copied from the CSR: dns, email, uri (Intune's strong-mapping SID
    # URL tag:microsoft.com,2022-09-14:sid:<SID> is a URI), ip, upn, other_name,
    # directory_name, registered_id. Others are dropped, or refused if set so.
    cert_san_types: CommaList = ["dns", "email", "uri", "ip", "upn"]
    cert_on_disallowed_san: Literal["drop", "refuse"] = "drop"
    cert_copy_subject: bool = True
    # Requester keys accepted: rsa, P-256, P-384, P-521.
    cert_key_types: CommaList = ["rsa", "P-256", "P-384"]
    cert_min_rsa_bits: int = Field(default=2048, ge=2048)
    cert_max_rsa_bits: int = Field(default=8192, ge=2048)
    # Names a shared challenge cannot vouch for, refused unless allowed here.
    cert_allow_wildcard_dns: bool = False
    cert_allow_control_characters: bool = False
    cert_allow_ca_subject: bool = False
    # Account SANs (upn, sid: Intune's strong-mapping URI) issued only when the
    # challenge provider vouched for the names (Intune) or a renewal keeps them.
    cert_vouched_san_types: CommaList = ["upn", "sid"]
    # A renewal without a challenge keeps the renewed certificate's identity: the
    # same subject and "subset" (the same SANs or fewer) or "exact" (the same SANs).
    renewal_san_match: Literal["subset", "exact"] = "subset"

    # CRLs: the signer publishes one per CA when a revocation is newer than the
    # latest CRL or half its validity has passed, checking this often.
    crl_validity_hours: float = Field(default=168.0, gt=0)
    crl_check_interval_seconds: float = Field(default=60.0, gt=0)
    # Public base URL of this service (e.g. http://scep.example.com). When set,
    # issued certificates carry a CRL distribution point <url>/crl/<ca>.crl.
    public_base_url: str | None = None

    # OCSP (RFC 6960 / RFC 5019 profile; docs/ocsp.md). "delegated": a responder
    # certificate per CA generation (id-kp-OCSPSigning, ocsp-nocheck), issued and
    # renewed by the signer, its key beside the RA's; "ca": the CA key signs.
    ocsp_signing: Literal["delegated", "ca"] = "delegated"
    # The responder certificate's lifetime; renewed when half of it has passed.
    ocsp_responder_validity_days: float = Field(default=7.0, gt=0, le=366)
    # nextUpdate - thisUpdate of a response; re-signed when half of it has passed.
    # Statuses are re-read from the store every SCEPLINE_CRL_CHECK_INTERVAL_SECONDS.
    ocsp_response_validity_seconds: float = Field(default=3600.0, ge=60)
    # Signed responses kept per process (least recently used are dropped).
    ocsp_cache_entries: int = Field(default=100_000, ge=0)
    # Requests larger than this are malformed (RFC 5019 requests are ~100 bytes).
    ocsp_max_request_bytes: int = Field(default=8192, ge=256, le=1 << 20)

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

    @field_validator(
        "cert_key_usage",
        "cert_extended_key_usage",
        "cert_san_types",
        "cert_key_types",
        "cert_vouched_san_types",
        mode="before",
    )
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _pkcs11_complete(self) -> Settings:
        if self.key_backend != "pkcs11":
            return self
        missing = [
            f"SCEPLINE_{name.upper()}"
            for name in ("pkcs11_module", "pkcs11_token_label")
            if not getattr(self, name)
        ]
        if missing:
            raise ValueError(f"SCEPLINE_KEY_BACKEND=pkcs11 needs {', '.join(missing)}")
        if (self.pkcs11_pin is None) == (self.pkcs11_pin_file is None):
            raise ValueError(
                "SCEPLINE_KEY_BACKEND=pkcs11 needs exactly one of SCEPLINE_PKCS11_PIN_FILE "
                "and SCEPLINE_PKCS11_PIN"
            )
        return self

    def pkcs11_user_pin(self) -> str:
        """The token's user PIN, read now (a rotated secret file is picked up)."""
        if self.pkcs11_pin_file is not None:
            return self.pkcs11_pin_file.read_text().strip()
        if self.pkcs11_pin is not None:
            return self.pkcs11_pin.get_secret_value()
        raise ValueError("no PKCS#11 PIN configured")

    @model_validator(mode="after")
    def _intune_complete(self) -> Settings:
        if self.challenge_provider != "intune":
            return self
        problem = self.intune_problem("SCEPLINE_CHALLENGE_PROVIDER=intune")
        if problem is not None:
            raise ValueError(problem)
        return self

    def intune_problem(self, who: str) -> str | None:
        """What the SCEPLINE_INTUNE_* settings lack for ``who`` (the default
        endpoint, or an endpoint of the configuration file) to use Intune."""
        missing = [
            f"SCEPLINE_{name.upper()}"
            for name in ("intune_tenant", "intune_client_id")
            if not getattr(self, name)
        ]
        if missing:
            return f"{who} needs {', '.join(missing)}"
        if (self.intune_client_certificate_file is None) != (self.intune_client_key_file is None):
            return (
                "SCEPLINE_INTUNE_CLIENT_CERTIFICATE_FILE and SCEPLINE_INTUNE_CLIENT_KEY_FILE "
                "go together"
            )
        credentials = [
            self.intune_client_secret is not None,
            self.intune_client_secret_file is not None,
            self.intune_client_certificate_file is not None,
        ]
        if sum(credentials) != 1:
            return (
                f"{who} needs exactly one credential: "
                "SCEPLINE_INTUNE_CLIENT_SECRET, SCEPLINE_INTUNE_CLIENT_SECRET_FILE, or "
                "SCEPLINE_INTUNE_CLIENT_CERTIFICATE_FILE with SCEPLINE_INTUNE_CLIENT_KEY_FILE"
            )
        return None

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'scepline.db'}"


# --- What the operator reads when settings do not validate -------------------

_PROBLEMS = {
    "int_parsing": "is not a whole number",
    "int_from_float": "is not a whole number",
    "float_parsing": "is not a number",
    "bool_parsing": "is not true or false",
    "literal_error": "is not an accepted value",
    "greater_than": "is out of range",
    "greater_than_equal": "is out of range",
    "less_than": "is out of range",
    "less_than_equal": "is out of range",
}
_SHOWN_VALUE = 60  # characters of a bad value echoed back


def describe_problems(error: ValidationError) -> list[str]:
    """One line per bad setting, naming its environment variable, what is wrong
    with the value and what the setting accepts. Secret values are never echoed."""
    lines: list[str] = []
    seen: set[str] = set()
    for problem in error.errors(include_url=False):
        location = problem["loc"]
        if not location:  # a check across settings: its message names them
            lines.append(_message(problem))
            continue
        name = str(location[0])
        if name in seen:  # one line per setting, even for several bad list items
            continue
        seen.add(name)
        field = Settings.model_fields.get(name)
        variable = f"SCEPLINE_{name.upper()}"
        if field is None:
            lines.append(f"{variable}: {_message(problem)}")
            continue
        value = "(hidden)" if _is_secret(field) else _shown(problem.get("input"))
        what = _PROBLEMS.get(problem["type"]) or _message(problem)
        accepted = _accepted(field)
        lines.append(f"{variable}={value} {what}" + (f"; expected {accepted}" if accepted else ""))
    return lines


def _message(problem: Any) -> str:
    return str(problem["msg"]).removeprefix("Value error, ")


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    if len(text) > _SHOWN_VALUE:
        text = text[:_SHOWN_VALUE] + "..."
    return repr(text)


def _is_secret(field: FieldInfo) -> bool:
    return SecretStr in _arguments(field.annotation)


def _arguments(annotation: object) -> tuple[object, ...]:
    """The types an annotation allows, Optional unwrapped (``int | None`` -> int)."""
    if typing.get_origin(annotation) in (typing.Union, type(int | None)):
        return tuple(a for a in typing.get_args(annotation) if a is not type(None))
    return (annotation,)


def _accepted(field: FieldInfo) -> str:
    [kind, *_] = _arguments(field.annotation) or (None,)
    if typing.get_origin(kind) is Literal:
        return "one of: " + ", ".join(str(choice) for choice in typing.get_args(kind))
    if kind is bool:
        return "true or false"
    if typing.get_origin(kind) is list:
        return "comma-separated names"
    if kind is int:
        return "a whole number" + _range(field)
    if kind is float:
        return "a number" + _range(field)
    return ""


def _range(field: FieldInfo) -> str:
    """``Field(ge=1, le=65535)`` as " from 1 to 65535", ``Field(gt=0)`` as " above 0"."""
    bounds = {}
    for limit in field.metadata:  # annotated_types constraints: Ge, Gt, Le, Lt
        for attribute in ("ge", "gt", "le", "lt"):
            if getattr(limit, attribute, None) is not None:
                bounds[attribute] = getattr(limit, attribute)
    if "ge" in bounds and "le" in bounds:
        return f" from {_number(bounds['ge'])} to {_number(bounds['le'])}"
    words = {"ge": "at least", "gt": "above", "le": "at most", "lt": "below"}
    return "".join(f" {words[name]} {_number(value)}" for name, value in bounds.items())


def _number(value: object) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)

"""Wire models of the simulator's own admin API (``/_sim/*``).

They are shared by the admin routes and by ``SimulatorAdmin`` so both sides of
the admin API agree on one schema. None of this is Microsoft's wire format.
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AppRegistration",
    "ChallengeSpec",
    "ClockState",
    "ClockUpdate",
    "FaultKind",
    "FaultSpec",
    "Knobs",
    "MintedChallenge",
    "RecordedCall",
    "RecordedNotification",
    "RevocationQueued",
    "RevocationRequest",
    "RevocationResult",
    "RevocationSeed",
    "Route",
]


class Route(StrEnum):
    """Names of the simulated Microsoft endpoints, used by faults and recordings."""

    INSTANCE_DISCOVERY = "instance-discovery"
    OPENID_CONFIGURATION = "openid-configuration"
    JWKS = "jwks"
    TOKEN = "token"  # noqa: S105 - a route name
    GRAPH_ENDPOINTS = "graph-endpoints"
    VALIDATE_REQUEST = "validateRequest"
    SUCCESS_NOTIFICATION = "successNotification"
    FAILURE_NOTIFICATION = "failureNotification"
    DOWNLOAD_REVOCATION_REQUESTS = "downloadRevocationRequests"
    UPLOAD_REVOCATION_RESULTS = "uploadRevocationResults"


class _Model(BaseModel):
    # Typos in a test's admin call must fail loudly, not configure nothing.
    model_config = ConfigDict(extra="forbid")


class AppRegistration(_Model):
    """An Entra app registration in the simulated tenant."""

    client_id: str
    client_secret: str | None = None
    certificate_pem: str | None = None  # for client_assertion (x5t / x5t#S256 lookup)
    has_role: bool = True  # Intune app role scep_challenge_provider, admin-consented
    graph_permission: bool = True  # Microsoft Graph Application.Read.All


class Knobs(_Model):
    """Behaviour switches; each documents the real-world case it imitates."""

    token_lifetime_seconds: int = Field(default=3599, ge=1)  # expires_in
    accept_single_slash_scope: bool = False  # Intune scope without the double slash
    shard: str = "shard-1"  # path prefix of the discovered URIs; change it = shard move
    omit_scep_endpoint: bool = False
    omit_pki_endpoint: bool = False
    # "same": every Intune entry listed twice; "stale_first"/"stale_last": a second
    # entry at a dead shard before/after the live one (C# keeps last, Java first).
    duplicate_endpoints: Literal["none", "same", "stale_first", "stale_last"] = "none"
    intune_base_url: str | None = None  # host of discovered URIs; default: the sim's own
    scep_api_versions: list[str] = ["2018-02-20", "5019-05-05"]
    pki_api_versions: list[str] = ["5019-05-05"]
    missing_role_status: Literal[401, 403] = 401  # the ref tests read 401 as role mismatch
    pki_requires_role: bool = True  # the permission PkiConnector needs is unconfirmed
    replay: Literal["allow", "reject"] = "allow"  # single-use challenges are unconfirmed
    replay_code: str = "ChallengeExpired"
    # A notification whose transactionId (and CSR) had no successful validate:
    unknown_transaction: Literal["lenient", "strict"] = "lenient"
    unknown_transaction_code: str = "BadCertificateRequestIdInChallenge"
    # OData rejects undeclared properties on closed types; assumed for Intune too.
    reject_unknown_properties: bool = True
    unknown_request_context: Literal["accept", "value_false", "bad_request"] = "accept"


class ChallengeSpec(_Model):
    """What Intune would bake into a device's challenge for one SCEP profile."""

    subject: str | None = None  # RFC 4514; None = not checked
    sans: list[str] | None = None  # "DNS:x", "email:x", "URI:x", "UPN:x", "IP:x"
    eku: list[str] | None = None  # dotted OIDs
    key_size: int | None = None
    tenant_id: str | None = None  # default: the simulated tenant
    device_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    user_id: str | None = None
    valid_for_seconds: int = 3600  # Intune: challengeExpInterval=60 (minutes)
    force_code: str | None = None  # answer this code once everything else passed


class MintedChallenge(_Model):
    id: str
    challenge: str  # put this in the CSR's challengePassword
    expires_at: dt.datetime


class FaultKind(StrEnum):
    THROTTLE = "throttle"  # 429 with Retry-After
    INTERNAL_ERROR = "internal_error"  # 500, InternalError with the nested-JSON message
    UNAVAILABLE = "unavailable"  # 503, nested-JSON message and Retry-After
    BAD_GATEWAY_HTML = "bad_gateway_html"  # 502, an HTML page from a proxy
    BAD_GATEWAY_EMPTY = "bad_gateway_empty"  # 502, no body at all
    NOT_FOUND = "not_found"  # 404
    LATENCY = "latency"  # sleep `seconds`, then answer normally
    HANG = "hang"  # sleep `seconds`, then drop the connection unanswered
    RESET = "reset"  # TCP RST without an answer
    CODE = "code"  # HTTP 200 carrying `code` (ScepActions routes)
    FALSE_VALUE = "false_value"  # {"value": false} (uploadRevocationResults)


class FaultSpec(_Model):
    """Fire `kind` on `route` for the next `count` calls, or with `probability`."""

    route: Route | Literal["*"]
    kind: FaultKind
    count: int | None = Field(default=1, ge=1)  # None: unlimited (with probability)
    probability: float | None = Field(default=None, gt=0, le=1)
    seconds: float = Field(default=0, ge=0)
    retry_after: int = Field(default=1, ge=0)
    code: str = "SimInventedUnknownCode"
    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])

    @model_validator(mode="after")
    def _bounded(self) -> FaultSpec:
        if self.count is None and self.probability is None:
            raise ValueError("a fault needs a count or a probability")
        if self.kind is FaultKind.CODE and self.route not in _SCEP_ACTION_ROUTES:
            raise ValueError("kind 'code' applies to the three ScepActions routes only")
        if self.kind is FaultKind.FALSE_VALUE and self.route != Route.UPLOAD_REVOCATION_RESULTS:
            raise ValueError("kind 'false_value' applies to uploadRevocationResults only")
        return self


_SCEP_ACTION_ROUTES = (
    Route.VALIDATE_REQUEST,
    Route.SUCCESS_NOTIFICATION,
    Route.FAILURE_NOTIFICATION,
)


class ClockUpdate(_Model):
    advance_seconds: float | None = None
    offset_seconds: float | None = None


class ClockState(_Model):
    now: dt.datetime
    offset_seconds: float


class RecordedCall(_Model):
    route: Route
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: Any  # JSON or form fields when they parse, else text
    status: int | None  # None when the connection was dropped
    response: Any
    fault: FaultKind | None
    at: dt.datetime


class RecordedNotification(_Model):
    kind: Literal["success", "failure"]
    fields: dict[str, Any]
    code: str
    at: dt.datetime


class RevocationSeed(_Model):
    """Queue revocations: of recorded success notifications, or given explicitly."""

    transaction_id: str | None = None
    serial_number: str | None = None
    all_issued: bool = False
    issuer_name: str | None = None  # explicit entries (no notification needed)
    ca_configuration: str | None = None


class RevocationRequest(_Model):
    request_context: str
    serial_number: str
    issuer_name: str
    ca_configuration: str


class RevocationResult(_Model):
    request_context: str
    succeeded: bool
    error_code: int
    error_message: str | None
    known: bool


class RevocationQueued(_Model):
    queued: list[RevocationRequest]

"""The simulator's mutable world: tenant, apps, knobs, faults, clock, recordings.

One ``SimulatorState`` backs one running app. Tests in the same process may
change it directly; tests elsewhere use the ``/_sim/*`` admin API. Mutations
that read-then-write take ``lock`` because the server runs in another thread.
"""

from __future__ import annotations

import datetime as dt
import random
import secrets
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from .models import (
    AppRegistration,
    FaultSpec,
    Knobs,
    RecordedCall,
    RecordedNotification,
    RevocationRequest,
    RevocationResult,
    Route,
)

__all__ = [
    "GRAPH_AUDIENCE",
    "GRAPH_ROLE",
    "GRAPH_SCOPE",
    "INTUNE_APP_ID",
    "INTUNE_AUDIENCE",
    "INTUNE_SCOPE",
    "INTUNE_SCOPE_SINGLE_SLASH",
    "PKI_SERVICE_PATH",
    "SCEP_ROLE",
    "SCEP_SERVICE_PATH",
    "ChallengeRecord",
    "SimClock",
    "SimulatorState",
]

INTUNE_APP_ID = "0000000a-0000-0000-c000-000000000000"
GRAPH_AUDIENCE = "https://graph.microsoft.com"
INTUNE_AUDIENCE = "https://api.manage.microsoft.com/"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
INTUNE_SCOPE = "https://api.manage.microsoft.com//.default"  # resource URI + "/.default"
INTUNE_SCOPE_SINGLE_SLASH = "https://api.manage.microsoft.com/.default"
SCEP_ROLE = "scep_challenge_provider"
GRAPH_ROLE = "Application.Read.All"
# Path shapes of the URIs Intune lists (docs/specs/intune-api.md, "Service discovery");
# the shard is our first segment.
SCEP_SERVICE_PATH = (
    "RACerts/ScepRequestValidationFEService/Gateway/StatelessScepRequestValidationService"
)
PKI_SERVICE_PATH = "RACerts/StatelessPkiConnectorService/Gateway/StatelessPkiConnectorService"


class SimClock:
    """Wall time plus an offset; governs challenge creation and expiry only.

    Access tokens follow real time, as MSAL's cache does: moving this clock an
    hour to expire a challenge must not also invalidate the client's cached
    token (use ``SimulatorState.expire_tokens`` for that).
    """

    def __init__(self) -> None:
        self.offset_seconds = 0.0

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.offset_seconds)

    def advance(self, seconds: float) -> None:
        self.offset_seconds += seconds


@dataclass
class ChallengeRecord:
    untargeted: bool = False
    uses: int = 0


def _default_app() -> AppRegistration:
    return AppRegistration(client_id=str(uuid.uuid4()), client_secret=secrets.token_urlsafe(24))


@dataclass
class SimulatorState:
    tenant_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    tenant_domain: str = "contoso.onmicrosoft.com"
    apps: dict[str, AppRegistration] = field(default_factory=dict)
    knobs: Knobs = field(default_factory=Knobs)
    seed: int | None = None  # for probabilistic faults
    # Kept across reset(): clients may hold tokens and challenges across tests.
    signing_key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    challenge_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    # Everything below is cleared by reset().
    clock: SimClock = field(default_factory=SimClock)
    faults: list[FaultSpec] = field(default_factory=list)
    calls: list[RecordedCall] = field(default_factory=list)
    token_counts: Counter[str] = field(default_factory=Counter)
    notifications: list[RecordedNotification] = field(default_factory=list)
    validated: dict[str, str] = field(default_factory=dict)  # transactionId -> CSR string
    challenges: dict[str, ChallengeRecord] = field(default_factory=dict)
    revocations: dict[str, RevocationRequest] = field(default_factory=dict)  # pending
    revocation_results: list[RevocationResult] = field(default_factory=list)
    issued_tokens: set[str] = field(default_factory=set)  # uti claims
    expired_tokens: set[str] = field(default_factory=set)  # uti claims, see expire_tokens
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __post_init__(self) -> None:
        if not self.apps:
            app = _default_app()
            self.apps[app.client_id] = app
        self._random = random.Random(self.seed)  # fault dice, not crypto
        self.mark_initial()

    # -- configuration -----------------------------------------------------------------

    @property
    def default_app(self) -> AppRegistration:
        return next(iter(self.apps.values()))

    def register_app(self, app: AppRegistration) -> None:
        with self.lock:
            self.apps[app.client_id] = app

    def set_knobs(self, **changes: Any) -> Knobs:
        """Validate and apply a partial knob update (unknown names raise)."""
        with self.lock:
            self.knobs = Knobs.model_validate({**self.knobs.model_dump(), **changes})
            return self.knobs

    def mark_initial(self) -> None:
        """Make the current apps and knobs what reset() returns to."""
        self._initial_apps = {k: v.model_copy() for k, v in self.apps.items()}
        self._initial_knobs = self.knobs.model_copy(deep=True)

    def reset(self) -> None:
        with self.lock:
            self.apps = {k: v.model_copy() for k, v in self._initial_apps.items()}
            self.knobs = self._initial_knobs.model_copy(deep=True)
            self.clock = SimClock()
            self.faults.clear()
            self.calls.clear()
            self.token_counts.clear()
            self.notifications.clear()
            self.validated.clear()
            self.challenges.clear()
            self.revocations.clear()
            self.revocation_results.clear()
            self.issued_tokens.clear()
            self.expired_tokens.clear()

    def expire_tokens(self) -> None:
        """Every token issued so far is from now on rejected as expired."""
        with self.lock:
            self.expired_tokens |= self.issued_tokens
            self.issued_tokens.clear()

    def tenant_matches(self, name: str) -> bool:
        return name.lower() in (self.tenant_id.lower(), self.tenant_domain.lower())

    # -- faults and recordings -------------------------------------------------------------

    def add_fault(self, spec: FaultSpec) -> FaultSpec:
        with self.lock:
            self.faults.append(spec)
        return spec

    def take_fault(self, route: Route) -> FaultSpec | None:
        """The fault to fire on this call, consuming one of its count."""
        with self.lock:
            for spec in list(self.faults):
                if spec.route not in (route, "*"):
                    continue
                if spec.probability is not None and self._random.random() >= spec.probability:
                    continue
                if spec.count is not None:
                    remaining = spec.count - 1
                    if remaining <= 0:
                        self.faults.remove(spec)
                    else:
                        index = self.faults.index(spec)
                        self.faults[index] = spec.model_copy(update={"count": remaining})
                return spec
        return None

    def record(self, call: RecordedCall) -> None:
        with self.lock:
            self.calls.append(call)

    def calls_to(self, route: Route | str | None = None) -> list[RecordedCall]:
        with self.lock:
            return [c for c in self.calls if route is None or c.route == route]

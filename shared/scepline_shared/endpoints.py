"""SCEP endpoints as the processes use them: each with its challenge provider,
certificate profile, renewal policy and the URL paths it is served at.

Without a configuration file there is one, ``default``, from the SCEPLINE_*
settings, at ``/scep``. With one (``SCEPLINE_CONFIG``, ``config_file.py``) each
``[endpoints.NAME]`` is served at ``/scep/NAME``; ``configured.endpoints_from``
builds them. Every request records the endpoint it arrived at, and each step
reads its endpoint's policy from here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from .ca import CertificateProfile
from .config_file import DEFAULT_CA, DEFAULT_ENDPOINT, IntuneTenantConfig

__all__ = [
    "DEFAULT_CA",
    "DEFAULT_ENDPOINT",
    "CaSpec",
    "Endpoint",
    "Endpoints",
    "Provider",
]

Provider = Literal["static", "one-time", "manual", "intune"]
RenewalScope = Literal["same-endpoint", "any-endpoint", "never"]

_WINDOWS_FORMS = ("/cgi-bin/pkiclient.exe", "/pkiclient.exe")


@dataclass(frozen=True)
class Endpoint:
    name: str
    provider: Provider
    profile: CertificateProfile = field(default_factory=CertificateProfile)
    # provider "static": the challenge; None for the default endpoint means the
    # lab challenge generated into the data directory.
    static_challenge: str | None = field(default=None, repr=False)
    # provider "one-time": the lifetime `scepline challenge new` gives by default.
    challenge_ttl: timedelta = timedelta(hours=24)
    # provider "manual": how long a request may wait for an operator's decision.
    approval_ttl: timedelta = timedelta(hours=72)
    renewal: RenewalScope = "same-endpoint"
    exact_renewal_sans: bool = False
    ca: str = DEFAULT_CA
    # URL paths served as this endpoint, each also with /pkiclient.exe and
    # /cgi-bin/pkiclient.exe appended (what Windows and other clients add).
    paths: tuple[str, ...] = ()
    # [endpoints.NAME.limits]: new enrolments per minute per serving process
    # (0: no limit), requests awaiting approval at once (0: no limit), and the
    # PKIOperation's wait for the outcome (None: SCEPLINE_SYNC_WAIT_SECONDS).
    enrolments_per_minute: int = 0
    max_awaiting_approval: int = 1000
    sync_wait_seconds: float | None = None
    # provider "intune": the tenant's app registration (None: SCEPLINE_INTUNE_*).
    intune: IntuneTenantConfig | None = field(default=None, repr=False)

    @property
    def calls_outside(self) -> bool:
        """Whether validating (and notifying) calls a service outside (Intune): such
        steps run in their own workers; the others run where the request is."""
        return self.provider == "intune"


@dataclass(frozen=True)
class CaSpec:
    """A CA of the deployment: ``default`` (SCEPLINE_DATA_DIR/ca, the SCEPLINE_CA_*
    settings) or one of ``[cas.NAME]`` (SCEPLINE_DATA_DIR/cas/NAME). What a new
    generation of it is made of (``ca init``, ``up``, ``ca rollover``)."""

    name: str
    common_name: str
    ra_common_name: str
    key_type: Literal["rsa", "ec"] = "rsa"
    key_size: int | None = None
    validity_days: int = 3650


@dataclass(frozen=True)
class Endpoints:
    """Every endpoint of the deployment, by name; ``default``: the one at ``/scep``;
    ``cas``: every CA, by name (``default`` first)."""

    by_name: Mapping[str, Endpoint]
    default: str | None = DEFAULT_ENDPOINT
    cas: Mapping[str, CaSpec] = field(default_factory=dict)
    _exact: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        exact: dict[str, str] = {}
        for endpoint in self.by_name.values():
            for path in endpoint.paths:
                exact.setdefault(path.rstrip("/") or "/", endpoint.name)
        object.__setattr__(self, "_exact", exact)

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(self.by_name.values())

    def __len__(self) -> int:
        return len(self.by_name)

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def __getitem__(self, name: str) -> Endpoint:
        return self.by_name[name]

    def get(self, name: str) -> Endpoint | None:
        return self.by_name.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.by_name)

    def with_provider(self, *providers: Provider) -> frozenset[str]:
        return frozenset(e.name for e in self if e.provider in providers)

    def resolve(self, path: str) -> str | None:
        """The endpoint a request path names, or None (HTTP 404).

        Each endpoint's paths, also with ``/pkiclient.exe`` or
        ``/cgi-bin/pkiclient.exe`` appended; ``/cgi-bin/pkiclient.exe`` alone
        (many clients' default) and any other path ending in ``/pkiclient.exe``
        (Windows appends it to whatever URL Intune gives it) are the default
        endpoint's, except under ``/scep/``, where a path names an endpoint."""
        normal = "/" + path.strip("/")
        found = self._exact.get(normal)
        if found is not None:
            return found
        for suffix in _WINDOWS_FORMS:
            if normal.endswith(suffix):
                base = normal[: -len(suffix)] or "/"
                found = self._exact.get(base)
                if found is not None:
                    return found
                if base.startswith("/scep/"):
                    return None
                return self.default
        return None

"""Validator wiring: each endpoint's challenge provider, chosen from settings
and the configuration file."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Protocol

from scepline_shared.configured import endpoints_from
from scepline_shared.endpoints import Endpoint, Endpoints
from scepline_shared.intune import IntuneClient
from scepline_shared.pipeline import Step, StepHandler
from scepline_shared.private_files import private_directory, read_or_create_secret
from scepline_shared.settings import Settings

from .challenge import (
    ChallengeValidator,
    IntuneChallengeValidator,
    ManualApprovalValidator,
    OneTimeChallengeValidator,
    StaticChallengeValidator,
)
from .challenge.manual import CountsWaiting
from .challenge.one_time import ConsumesChallenges
from .handler import EndpointPolicy, ValidatorDeps, handle_validate
from .ports import ValidatorStore

__all__ = [
    "LAB_CHALLENGE_FILE",
    "STEP",
    "build_handler",
    "challenge_provider",
    "endpoint_policies",
    "lab_challenge",
]

STEP = Step.VALIDATE

# Where the lab's generated static challenge lives, under SCEPLINE_DATA_DIR.
LAB_CHALLENGE_FILE = "static-challenge"


def challenge_provider(
    settings: Settings, intune: IntuneClient | None = None
) -> tuple[ChallengeValidator, Path | None]:
    """The provider of the endpoint the settings describe (``default``), and the
    file holding the static challenge if it was generated (no
    SCEPLINE_STATIC_CHALLENGE set).

    ``intune`` is the process's Intune client (the composition root owns its
    lifetime); it is required when the provider is Intune.
    """
    if settings.challenge_provider == "intune":
        return _intune(settings, intune), None
    if settings.static_challenge is not None:
        return StaticChallengeValidator(settings.static_challenge.get_secret_value()), None
    challenge, path = lab_challenge(settings.data_dir)
    return StaticChallengeValidator(challenge), path


def _intune(settings: Settings, intune: IntuneClient | None) -> ChallengeValidator:
    if intune is None:
        raise ValueError("the Intune provider needs the process's IntuneClient")
    deadline = dt.timedelta(seconds=settings.intune_validation_deadline_seconds)
    return IntuneChallengeValidator(intune, deadline=deadline)


class ValidatingStore(ConsumesChallenges, CountsWaiting, Protocol):
    """What the providers need from the store (one-time challenges, waiting requests)."""


def endpoint_policies(
    settings: Settings,
    store: ValidatingStore,
    *,
    endpoints: Endpoints | None = None,
    intune: IntuneClient | Mapping[str, IntuneClient] | None = None,
    replace: ChallengeValidator | None = None,
) -> tuple[dict[str, EndpointPolicy], Path | None]:
    """How each endpoint validates, and the generated lab challenge's file (the
    default endpoint's, when its static challenge is not configured).
    ``intune``: the process's Intune client, or each Intune endpoint's (its
    tenant's) by endpoint name.

    ``replace``: the provider of the default endpoint (the endpoint the settings
    describe) instead of the configured one: a simulator, a test double."""
    endpoints = endpoints if endpoints is not None else endpoints_from(settings)
    policies: dict[str, EndpointPolicy] = {}
    generated: Path | None = None
    for endpoint in endpoints:
        client = intune.get(endpoint.name) if isinstance(intune, Mapping) else intune
        if replace is not None and endpoint.name == "default":
            challenge: ChallengeValidator = replace
        elif endpoint.name == "default" and endpoint.provider in ("static", "intune"):
            challenge, generated = challenge_provider(settings, client)
        else:
            challenge = _provider(settings, endpoint, store, client)
        policies[endpoint.name] = EndpointPolicy(
            challenge=challenge,
            profile=endpoint.profile,
            exact_renewal_sans=endpoint.exact_renewal_sans,
            renewal=endpoint.renewal,
        )
    return policies, generated


def _provider(
    settings: Settings,
    endpoint: Endpoint,
    store: ValidatingStore,
    intune: IntuneClient | None,
) -> ChallengeValidator:
    if endpoint.provider == "static":
        if endpoint.static_challenge is None:
            raise ValueError(f"endpoint {endpoint.name}: the static provider needs a challenge")
        return StaticChallengeValidator(endpoint.static_challenge)
    if endpoint.provider == "one-time":
        return OneTimeChallengeValidator(store, endpoint=endpoint.name, profile=endpoint.profile)
    if endpoint.provider == "manual":
        return ManualApprovalValidator(
            store, endpoint=endpoint.name, limit=endpoint.max_awaiting_approval
        )
    return _intune(settings, intune)


def lab_challenge(data_dir: Path) -> tuple[str, Path]:
    """The lab's static challenge: generated once into ``<data_dir>/static-challenge``
    (mode 0600), then read by every process that shares the data directory, so
    it survives restarts and a separately started validator agrees with it.

    It goes to a file, never to the console or a log; processes racing to
    create it all end up with one challenge (`read_or_create_secret`).
    """
    path = private_directory(data_dir) / LAB_CHALLENGE_FILE
    generated = read_or_create_secret(path, lambda: (secrets.token_urlsafe(18) + "\n").encode())
    challenge = generated.decode().strip()
    if not challenge:
        raise ValueError(f"{path} is empty: delete it to generate a new challenge")
    return challenge, path


def build_handler(
    repository: ValidatorStore, policies: Mapping[str, EndpointPolicy]
) -> StepHandler:
    return partial(handle_validate, deps=ValidatorDeps(repository, dict(policies)))

"""Validator wiring: the challenge provider chosen from settings."""

from __future__ import annotations

import datetime as dt
import secrets
from functools import partial

from scepline_shared.challenge import (
    ChallengeValidator,
    IntuneChallengeValidator,
    StaticChallengeValidator,
)
from scepline_shared.intune import IntuneClient
from scepline_shared.pipeline import Step, StepHandler
from scepline_shared.settings import Settings
from scepline_shared.store.repository import RequestRepository

from .handler import ValidatorDeps, handle_validate

__all__ = ["STEP", "build_handler", "challenge_provider"]

STEP = Step.VALIDATE


def challenge_provider(
    settings: Settings, intune: IntuneClient | None = None
) -> tuple[ChallengeValidator, str | None]:
    """The configured provider, and the static challenge if one was generated.

    ``intune`` is the process's Intune client (the composition root owns its
    lifetime); it is required when the provider is Intune.
    """
    if settings.challenge_provider == "intune":
        if intune is None:
            raise ValueError("the Intune provider needs the process's IntuneClient")
        deadline = dt.timedelta(seconds=settings.intune_validation_deadline_seconds)
        return IntuneChallengeValidator(intune, deadline=deadline), None
    if settings.static_challenge is not None:
        return StaticChallengeValidator(settings.static_challenge.get_secret_value()), None
    generated = secrets.token_urlsafe(18)
    return StaticChallengeValidator(generated), generated


def build_handler(repository: RequestRepository, challenge: ChallengeValidator) -> StepHandler:
    return partial(handle_validate, deps=ValidatorDeps(repository, challenge))

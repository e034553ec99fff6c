"""Validator wiring: the challenge provider chosen from settings."""

from __future__ import annotations

import secrets
from functools import partial

from scepline_shared.challenge import ChallengeValidator, StaticChallengeValidator
from scepline_shared.pipeline import Step, StepHandler
from scepline_shared.settings import Settings
from scepline_shared.store.repository import RequestRepository

from .handler import ValidatorDeps, handle_validate

__all__ = ["STEP", "build_handler", "challenge_provider"]

STEP = Step.VALIDATE


def challenge_provider(settings: Settings) -> tuple[ChallengeValidator, str | None]:
    """The configured provider, and the static challenge if one was generated."""
    if settings.challenge_provider != "static":
        raise SystemExit(
            f"SCEPLINE_CHALLENGE_PROVIDER={settings.challenge_provider} is not available yet"
        )
    if settings.static_challenge is not None:
        return StaticChallengeValidator(settings.static_challenge.get_secret_value()), None
    generated = secrets.token_urlsafe(18)
    return StaticChallengeValidator(generated), generated


def build_handler(repository: RequestRepository, challenge: ChallengeValidator) -> StepHandler:
    return partial(handle_validate, deps=ValidatorDeps(repository, challenge))

"""Validator wiring: the challenge provider chosen from settings."""

from __future__ import annotations

import datetime as dt
import secrets
from functools import partial
from pathlib import Path

from scepline_shared.configured import profile_from
from scepline_shared.intune import IntuneClient
from scepline_shared.pipeline import Step, StepHandler
from scepline_shared.private_files import private_directory, read_or_create_secret
from scepline_shared.settings import Settings

from .challenge import (
    ChallengeValidator,
    IntuneChallengeValidator,
    StaticChallengeValidator,
)
from .handler import ValidatorDeps, handle_validate
from .ports import ValidatorStore

__all__ = ["LAB_CHALLENGE_FILE", "STEP", "build_handler", "challenge_provider", "lab_challenge"]

STEP = Step.VALIDATE

# Where the lab's generated static challenge lives, under SCEPLINE_DATA_DIR.
LAB_CHALLENGE_FILE = "static-challenge"


def challenge_provider(
    settings: Settings, intune: IntuneClient | None = None
) -> tuple[ChallengeValidator, Path | None]:
    """The configured provider, and the file holding the static challenge if
    it was generated (no SCEPLINE_STATIC_CHALLENGE set).

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
    challenge, path = lab_challenge(settings.data_dir)
    return StaticChallengeValidator(challenge), path


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
    settings: Settings, repository: ValidatorStore, challenge: ChallengeValidator
) -> StepHandler:
    deps = ValidatorDeps(
        repository,
        challenge,
        profile=profile_from(settings),
        exact_renewal_sans=settings.renewal_san_match == "exact",
    )
    return partial(handle_validate, deps=deps)

"""Validator wiring: the challenge provider chosen from settings."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import tempfile
from functools import partial
from pathlib import Path

from scepline_shared.challenge import (
    ChallengeValidator,
    IntuneChallengeValidator,
    StaticChallengeValidator,
)
from scepline_shared.intune import IntuneClient
from scepline_shared.issuance import profile_from
from scepline_shared.pipeline import Step, StepHandler
from scepline_shared.settings import Settings
from scepline_shared.store.repository import RequestRepository

from .handler import ValidatorDeps, handle_validate

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

    It goes to a file, never to the console or a log. Created by linking a
    complete temporary file into place, so a process racing this one reads
    either nothing (and links its own) or the whole challenge.
    """
    path = data_dir / LAB_CHALLENGE_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=data_dir, prefix=".challenge-")
        try:
            with os.fdopen(descriptor, "w") as file:  # mkstemp: mode 0600
                file.write(secrets.token_urlsafe(18) + "\n")
            # Another process may have won the race: then its challenge is used.
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    challenge = path.read_text().strip()
    if not challenge:
        raise ValueError(f"{path} is empty: delete it to generate a new challenge")
    return challenge, path


def build_handler(
    settings: Settings, repository: RequestRepository, challenge: ChallengeValidator
) -> StepHandler:
    deps = ValidatorDeps(
        repository,
        challenge,
        profile=profile_from(settings),
        exact_renewal_sans=settings.renewal_san_match == "exact",
    )
    return partial(handle_validate, deps=deps)

"""Notifier wiring."""

from __future__ import annotations

from functools import partial

from scepline_shared.pipeline import Step, StepHandler
from scepline_shared.store.models import NotifyState
from scepline_shared.store.repository import RequestRepository
from scepline_shared.worker import DeadLetterHook

from .handler import NotifierDeps, handle_notify

__all__ = ["STEP", "build_dead_letter_hook", "build_handler"]

STEP = Step.NOTIFY


def build_handler(repository: RequestRepository) -> StepHandler:
    return partial(handle_notify, deps=NotifierDeps(repository))


def build_dead_letter_hook(repository: RequestRepository) -> DeadLetterHook:
    """A notification that keeps failing is DEAD until an operator replays it."""

    async def mark_dead(transaction_id: str, reason: str) -> None:
        await repository.transition_notify(
            transaction_id=transaction_id,
            from_state=NotifyState.NONE,
            to_state=NotifyState.DEAD,
            detail=reason,
        )

    return mark_dead

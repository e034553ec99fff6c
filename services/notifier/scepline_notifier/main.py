"""Notifier wiring: the provider to notify, and the routes into the notify step."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from scepline_shared.configured import endpoints_from
from scepline_shared.endpoints import Endpoints
from scepline_shared.intune import IntuneClient
from scepline_shared.pipeline import Step, StepHandler
from scepline_shared.settings import Settings
from scepline_shared.store.models import NotifyState
from scepline_shared.worker import DeadLetterHook

from .handler import NotifierDeps, handle_notify
from .intune import report_given_up
from .ports import NotifierStore
from .revocations import RevocationSync

__all__ = [
    "STEP",
    "FailureReporter",
    "build_dead_letter_hook",
    "build_failure_reporter",
    "build_handler",
    "build_revocation_sync",
]

STEP = Step.NOTIFY


def build_handler(
    settings: Settings,
    repository: NotifierStore,
    intune: IntuneClient | None = None,
    *,
    endpoints: Endpoints | None = None,
) -> StepHandler:
    """The notify step for the configured providers (``intune``: the process's
    client): Intune is told of the requests of its endpoints, the others are
    released at once."""
    endpoints = endpoints if endpoints is not None else endpoints_from(settings)
    told = endpoints.with_provider("intune")
    if not told:
        return partial(handle_notify, deps=NotifierDeps(repository))
    if intune is None:
        raise ValueError("the Intune provider needs the process's IntuneClient")
    deps = NotifierDeps(
        repository,
        intune,
        release_before_notify=settings.release_before_notify,
        intune_endpoints=None if told == frozenset(endpoints.names) else told,
    )
    return partial(handle_notify, deps=deps)


def build_revocation_sync(
    settings: Settings, repository: NotifierStore, intune: IntuneClient | None
) -> RevocationSync | None:
    """Intune's revocation requests, polled by the notifier (``revocations.py``);
    None without the Intune provider or with SCEPLINE_INTUNE_REVOCATION_INTERVAL_SECONDS=0."""
    if intune is None or settings.intune_revocation_interval_seconds == 0:
        return None
    return RevocationSync(
        repository=repository,
        intune=intune,
        interval=settings.intune_revocation_interval_seconds,
        batch=settings.intune_revocation_batch,
    )


# Called with a transaction id after an operator failed the request.
FailureReporter = Callable[[str], Awaitable[None]]


def build_failure_reporter(
    repository: NotifierStore, intune: IntuneClient | None
) -> FailureReporter | None:
    """How an operator's give-up reaches the provider: Intune gets a
    failureNotification for a request it validated (``intune.report_given_up``).
    None for providers with nobody to tell."""
    if intune is None:
        return None
    return partial(report_given_up, repository, intune)


def build_dead_letter_hook(repository: NotifierStore) -> DeadLetterHook:
    """A notification that keeps failing is DEAD until an operator replays it."""

    async def mark_dead(transaction_id: str, reason: str) -> None:
        await repository.transition_notify(
            transaction_id=transaction_id,
            from_state=NotifyState.NONE,
            to_state=NotifyState.DEAD,
            detail=reason,
        )

    return mark_dead

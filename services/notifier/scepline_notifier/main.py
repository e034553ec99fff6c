"""Notifier wiring: the provider to notify, and the routes into the notify step."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
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
    intune: IntuneClient | Mapping[str, IntuneClient] | None = None,
    *,
    endpoints: Endpoints | None = None,
) -> StepHandler:
    """The notify step for the configured providers: Intune is told of the
    requests of its endpoints, the others are released at once. ``intune``: the
    process's client, or each Intune endpoint's (its tenant's) by endpoint name."""
    endpoints = endpoints if endpoints is not None else endpoints_from(settings)
    told = endpoints.with_provider("intune")
    if not told:
        return partial(handle_notify, deps=NotifierDeps(repository))
    if intune is None:
        raise ValueError("the Intune provider needs the process's IntuneClient")
    if isinstance(intune, Mapping):
        missing = told - set(intune)
        if missing:
            raise ValueError(f"no Intune client for endpoint(s) {', '.join(sorted(missing))}")
        deps = NotifierDeps(
            repository,
            release_before_notify=settings.release_before_notify,
            clients={name: intune[name] for name in told},
        )
        return partial(handle_notify, deps=deps)
    deps = NotifierDeps(
        repository,
        intune,
        release_before_notify=settings.release_before_notify,
        intune_endpoints=None if told == frozenset(endpoints.names) else told,
    )
    return partial(handle_notify, deps=deps)


def build_revocation_sync(
    settings: Settings,
    repository: NotifierStore,
    intune: IntuneClient | None,
    *,
    endpoints: Collection[str] | None = None,
) -> RevocationSync | None:
    """Intune's revocation requests, polled by the notifier (``revocations.py``);
    None without the Intune provider or with SCEPLINE_INTUNE_REVOCATION_INTERVAL_SECONDS=0.
    ``endpoints``: the only endpoints whose certificates this tenant may revoke
    (None: every one; a deployment with one Intune tenant)."""
    if intune is None or settings.intune_revocation_interval_seconds == 0:
        return None
    return RevocationSync(
        repository=repository,
        intune=intune,
        interval=settings.intune_revocation_interval_seconds,
        batch=settings.intune_revocation_batch,
        endpoints=endpoints,
    )


# Called with a transaction id after an operator failed the request.
FailureReporter = Callable[[str], Awaitable[None]]


def build_failure_reporter(
    repository: NotifierStore, intune: IntuneClient | Mapping[str, IntuneClient] | None
) -> FailureReporter | None:
    """How an operator's give-up reaches the provider: Intune gets a
    failureNotification for a request it validated (``intune.report_given_up``),
    from the request's endpoint's tenant when ``intune`` maps endpoints to
    clients. None for providers with nobody to tell."""
    if intune is None or (isinstance(intune, Mapping) and not intune):
        return None
    if not isinstance(intune, Mapping):
        return partial(report_given_up, repository, intune)
    clients = dict(intune)

    async def report(transaction_id: str) -> None:
        request = await repository.get(transaction_id)
        client = None if request is None else clients.get(request.endpoint)
        if client is not None:
            await report_given_up(repository, client, transaction_id)

    return report


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

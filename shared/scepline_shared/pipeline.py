"""The enrolment pipeline's contract: routing, typed retry outcomes, and ports.

A request moves RECEIVED → (validate) → VALIDATED → (sign: SIGNING, the
claim, then SIGNED) → (notify) → ISSUED, or ends REJECTED/FAILED. At a
"manual" endpoint validate leaves it AWAITING_APPROVAL, outside the pipeline
until an operator's decision (or its expiry) moves it on. The state
store is the truth: the step to run next is decided here, from what the store
recorded about the request (its state, what vouched for it, whether its
provider was told), so a message only says "look at transaction X", and any
step may be delivered twice.

Handlers raise ``Transient`` to be retried later, or ``Permanent`` when the
request cannot be processed at all; only the worker decides what a retry means
(a delay, a delay queue, a dead-letter queue).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from .messages import Step
from .store.models import Approval, NotifyState, RequestState
from .store.ports import ReadsRequests
from .store.views import RequestView

__all__ = [
    "Permanent",
    "Pipeline",
    "Step",
    "StepHandler",
    "Transient",
    "UnknownTransaction",
    "answer_now",
    "next_step",
    "owes_failure_notification",
    "request_after",
    "resume_step",
]


_NEXT_STEP: dict[RequestState, Step] = {
    RequestState.RECEIVED: Step.VALIDATE,
    RequestState.VALIDATED: Step.SIGN,
    RequestState.SIGNED: Step.NOTIFY,
}
# SIGNING is not routed on: a signer holds the request. Only a request left
# behind in it (the signer died) is handed to the sign step again, by the sweep.
_RESUME_STEP: dict[RequestState, Step] = {**_NEXT_STEP, RequestState.SIGNING: Step.SIGN}


def owes_failure_notification(request: RequestView, *, after_dead: bool = False) -> bool:
    """The request FAILED after a provider vouched for it (Intune validated it)
    and the provider was not told: it is owed a failureNotification.
    ``after_dead``: a notification that already failed (notify DEAD) counts as
    not told too (an operator giving the request up)."""
    untold = (NotifyState.NONE, NotifyState.DEAD) if after_dead else (NotifyState.NONE,)
    return (
        request.state is RequestState.FAILED
        and request.approval is Approval.PROVIDER
        and request.notify_state in untold
    )


def next_step(request: RequestView) -> Step | None:
    """The step that moves ``request`` on after a step ran; None when nothing is
    left to do (it is final and nobody is owed a word, or a signer holds it)."""
    if owes_failure_notification(request):
        return Step.NOTIFY  # the device has its FAILURE; the provider is told next
    return _NEXT_STEP.get(request.state)


def answer_now(request: RequestView) -> bool:
    """Whether the device waiting on ``request`` should hear its answer now: it is
    final, or it waits for an operator (PENDING, whatever the wait setting)."""
    return request.is_terminal or request.state is RequestState.AWAITING_APPROVAL


def resume_step(request: RequestView) -> Step | None:
    """The step that picks up a request nobody moved on for a while (the sweep)."""
    return _RESUME_STEP.get(request.state)


class Transient(Exception):
    """Try this step again later (Intune throttled, HSM session dropped...)."""

    def __init__(self, reason: str, *, defer: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.defer = defer


class Permanent(Exception):
    """This step can never succeed for this message (e.g. unknown transaction)."""


class UnknownTransaction(Permanent):
    def __init__(self, transaction_id: str) -> None:
        super().__init__(f"no request with transaction id {transaction_id!r}")


# A step handler moves one request on and returns it as it is afterwards
# (whoever moved it), so the worker can route it with `next_step`. It raises
# Permanent for a transaction the store does not know.
StepHandler = Callable[[str], Awaitable[RequestView]]


async def request_after(
    repository: ReadsRequests, transaction_id: str, moved: RequestView | None
) -> RequestView:
    """The request after a compare-and-set: as we left it if it moved, else as
    whoever moved it left it."""
    if moved is not None:
        return moved
    current = await repository.get(transaction_id)
    if current is None:
        raise UnknownTransaction(transaction_id)
    return current


class Pipeline(Protocol):
    """What ingress needs from the pipeline."""

    async def submit(
        self, transaction_id: str, step: Step = Step.VALIDATE, request: RequestView | None = None
    ) -> None:
        """Hand a recorded request to the pipeline at ``step`` (at-least-once);
        ``request``: the request as the caller has it (which endpoint's it is)."""
        ...

    async def wait_for_outcome(self, transaction_id: str, timeout: float) -> None:
        """Return when the request reached a final state, or after ``timeout``."""
        ...

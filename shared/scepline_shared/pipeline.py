"""The enrolment pipeline's contract: steps, typed retry outcomes, and ports.

A request moves RECEIVED → (validate) → VALIDATED → (sign: SIGNING, the
claim, then SIGNED) → (notify) → ISSUED, or ends REJECTED/FAILED. The state store is the truth: the
step to run next is a pure function of the stored state, so a message only says
"look at transaction X", and any step may be delivered twice.

Handlers raise ``Transient`` to be retried later, or ``Permanent`` when the
request cannot be processed at all; only the pipeline implementation decides
what a retry means (a delay, a delay queue, a dead-letter queue).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Awaitable, Callable
from typing import Protocol

from .store.models import RequestState
from .store.repository import RequestRepository
from .store.views import RequestView

__all__ = [
    "Permanent",
    "Pipeline",
    "Step",
    "StepHandler",
    "Transient",
    "UnknownTransaction",
    "backoff_delay",
    "next_step",
    "resume_step",
    "state_after",
]


class Step(enum.StrEnum):
    VALIDATE = "validate"
    SIGN = "sign"
    NOTIFY = "notify"


_NEXT_STEP: dict[RequestState, Step] = {
    RequestState.RECEIVED: Step.VALIDATE,
    RequestState.VALIDATED: Step.SIGN,
    RequestState.SIGNED: Step.NOTIFY,
}


def backoff_delay(attempt: int, *, base: float, cap: float) -> float:
    """Exponential backoff with full jitter (attempt counts from 0)."""
    return random.uniform(0, min(cap, base * 2**attempt))


# SIGNING is not routed on: a signer holds the request. Only a request left
# behind in it (the signer died) is handed to the sign step again, by the sweep.
_RESUME_STEP: dict[RequestState, Step] = {**_NEXT_STEP, RequestState.SIGNING: Step.SIGN}


def next_step(state: RequestState) -> Step | None:
    """The step that moves a request on from ``state`` (after a step ran); None
    when it is final, or while a signer holds it."""
    return _NEXT_STEP.get(state)


def resume_step(state: RequestState) -> Step | None:
    """The step that picks up a request nobody moved on for a while (the sweep)."""
    return _RESUME_STEP.get(state)


class Transient(Exception):
    """Try this step again later (Intune throttled, HSM session dropped...)."""

    def __init__(self, reason: str, *, defer: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.defer = defer


class Permanent(Exception):
    """This step can never succeed for this message (e.g. unknown transaction)."""


# A step handler moves one request on and returns the state it is in afterwards
# (whoever moved it), so the caller can route it to the next step. It raises
# Permanent for a transaction the store does not know.
StepHandler = Callable[[str], Awaitable[RequestState]]


class UnknownTransaction(Permanent):
    def __init__(self, transaction_id: str) -> None:
        super().__init__(f"no request with transaction id {transaction_id!r}")


async def state_after(
    repository: RequestRepository, transaction_id: str, moved: RequestView | None
) -> RequestState:
    """The request's state after a compare-and-set: ours if it moved, else whoever's."""
    if moved is not None:
        return moved.state
    current = await repository.get(transaction_id)
    if current is None:
        raise UnknownTransaction(transaction_id)
    return current.state


class Pipeline(Protocol):
    """What ingress needs from the pipeline."""

    async def submit(self, transaction_id: str, step: Step = Step.VALIDATE) -> None:
        """Hand a recorded request to the pipeline at ``step`` (at-least-once)."""
        ...

    async def wait_for_outcome(self, transaction_id: str, timeout: float) -> None:
        """Return when the request reached a final state, or after ``timeout``."""
        ...

"""Run one pipeline step over a broker: the only place that maps a handler's
outcome to ack, retry (delay queue) or dead letter.

A handler commits to the state store first; only then does the worker publish
the next step (or the outcome) and ack. A crash in between means redelivery,
and handlers are idempotent, so nothing is lost or done twice.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from .backoff import backoff_delay
from .broker.base import Broker, Delivery
from .log import bind_transaction, get_logger
from .messages import StepMessage
from .metrics import PIPELINE_STEP_SECONDS, QUEUE_LAG
from .pipeline import Permanent, Step, StepHandler, Transient, answer_now, next_step
from .store.views import RequestView

__all__ = [
    "DeadLetterHook",
    "InlineStep",
    "InlineSteps",
    "RetryPolicy",
    "StepWorker",
    "hand_over",
    "publish_route",
    "run_inline",
]

log = get_logger(__name__)

# Called with (transaction_id, reason) after a message of this step was parked.
DeadLetterHook = Callable[[str, str], Awaitable[None]]

# Steps run in this process right after the step that leads to them, instead of
# as a queue hop: those that call nothing outside (a static challenge; a release
# with nobody to notify). The composition root decides which; the handlers, the
# state machine and the history are the same either way.
InlineSteps = Mapping[Step, StepHandler]


@dataclass(frozen=True)
class InlineStep:
    """A step run inline only for the requests ``applies`` accepts (those of
    endpoints whose provider calls nothing outside); the others go to its queue."""

    handler: StepHandler
    applies: Callable[[RequestView], bool]

    async def __call__(self, transaction_id: str) -> RequestView:
        return await self.handler(transaction_id)


def _inline_for(
    inline: InlineSteps, step: Step | None, request: RequestView | None
) -> StepHandler | None:
    """The handler to run ``step`` here for ``request``, or None (its queue's)."""
    handler = None if step is None else inline.get(step)
    if isinstance(handler, InlineStep) and (request is None or not handler.applies(request)):
        return None
    return handler


async def run_inline(request: RequestView, inline: InlineSteps) -> tuple[RequestView, Step | None]:
    """Carry ``request`` through the inline steps that follow it; the request as
    the last one left it, and the step left for the broker (None: nothing). A
    step that fails inline is left for the broker too: its own worker retries it."""
    following = next_step(request)
    while (handler := _inline_for(inline, following, request)) is not None:
        assert following is not None
        started = time.perf_counter()
        try:
            request = await handler(request.transaction_id)
        except Exception as error:  # noqa: BLE001 - the step's own queue takes over
            PIPELINE_STEP_SECONDS.labels(following.value, "error").observe(
                time.perf_counter() - started
            )
            log.warning(
                "inline step failed; handing it to its queue",
                step=following.value,
                error=f"{type(error).__name__}: {error}",
            )
            break
        PIPELINE_STEP_SECONDS.labels(following.value, "ok").observe(time.perf_counter() - started)
        following = next_step(request)
    return request, following


async def publish_route(
    broker: Broker, transaction_id: str, request: RequestView, following: Step | None
) -> None:
    """Publish the step left for ``request``, and its outcome once the device
    should hear it (`answer_now`: final, or waiting for an operator; a FAILED
    request may still go on to notify its provider)."""
    if following is not None:
        await broker.publish(
            StepMessage(
                transaction_id=transaction_id, step=following, enqueued_at=dt.datetime.now(dt.UTC)
            )
        )
    if answer_now(request):
        await broker.publish_outcome(transaction_id)


async def hand_over(
    broker: Broker,
    transaction_id: str,
    step: Step,
    inline: InlineSteps,
    request: RequestView | None = None,
) -> None:
    """Hand a request to the pipeline at ``step``: run it here if it is inline
    (and what follows inline), publish what is left. ``request``: the request
    as the caller has it, for steps inline only for some requests."""
    handler = _inline_for(inline, step, request)
    if handler is not None:
        try:
            after = await handler(transaction_id)
        except Exception as error:  # noqa: BLE001 - the step's own queue takes over
            log.warning(
                "inline step failed; handing it to its queue",
                step=step.value,
                error=f"{type(error).__name__}: {error}",
            )
        else:
            after, following = await run_inline(after, inline)
            await publish_route(broker, transaction_id, after, following)
            return
    await broker.publish(
        StepMessage(transaction_id=transaction_id, step=step, enqueued_at=dt.datetime.now(dt.UTC))
    )


class RetryPolicy:
    def __init__(self, *, max_attempts: int = 6, base_delay: float = 1.0, max_delay: float = 600.0):
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay

    def delay(self, attempt: int) -> float:
        """Backoff before delivery ``attempt + 1`` (attempts count from 1)."""
        return backoff_delay(attempt - 1, base=self.base_delay, cap=self.max_delay)


class StepWorker:
    def __init__(
        self,
        *,
        step: Step,
        handler: StepHandler,
        broker: Broker,
        retry: RetryPolicy | None = None,
        on_dead_letter: DeadLetterHook | None = None,
        inline: InlineSteps | None = None,
    ) -> None:
        self.step = step
        self._handler = handler
        self._inline: InlineSteps = inline or {}
        self._broker = broker
        self._retry = retry or RetryPolicy()
        self._on_dead_letter = on_dead_letter
        # Metric children resolved once (labels() takes a lock and a dict lookup).
        self._lag = QUEUE_LAG.labels(step.value)
        self._seconds = {
            outcome: PIPELINE_STEP_SECONDS.labels(step.value, outcome)
            for outcome in ("ok", "transient", "permanent", "error")
        }

    async def start(self, *, prefetch: int) -> None:
        await self._broker.consume(self.step, self.handle_delivery, prefetch=prefetch)

    async def handle_delivery(self, delivery: Delivery) -> None:
        message = delivery.message
        if message is None:
            log.error("unreadable message dead-lettered", step=self.step.value)
            await delivery.dead_letter(reason="unreadable message body")
            return
        lag = (dt.datetime.now(dt.UTC) - message.enqueued_at).total_seconds()
        self._lag.observe(max(lag, 0.0))
        with bind_transaction(message.transaction_id):
            await self._process(delivery, message)

    async def _process(self, delivery: Delivery, message: StepMessage) -> None:
        started = time.perf_counter()
        outcome = "ok"
        try:
            request = await self._handler(message.transaction_id)
        except Transient as transient:
            outcome = "transient"
            await self._retry_or_park(delivery, message, transient.reason, transient.defer)
            return
        except Permanent as permanent:
            outcome = "permanent"
            await self._park(delivery, message, str(permanent))
            return
        except Exception as error:
            outcome = "error"
            log.exception("step handler failed", step=self.step.value)
            await self._retry_or_park(delivery, message, f"{type(error).__name__}: {error}", None)
            return
        finally:
            self._seconds[outcome].observe(time.perf_counter() - started)
        request, following = await run_inline(request, self._inline)
        await publish_route(self._broker, message.transaction_id, request, following)
        await delivery.ack()

    async def _retry_or_park(
        self, delivery: Delivery, message: StepMessage, reason: str, defer: float | None
    ) -> None:
        if message.attempt >= self._retry.max_attempts:
            await self._park(
                delivery, message, f"gave up after {message.attempt} attempts: {reason}"
            )
            return
        delay = defer if defer is not None else self._retry.delay(message.attempt)
        log.warning(
            "step will be retried",
            step=self.step.value,
            attempt=message.attempt,
            retry_in=round(delay, 3),
            reason=reason,
        )
        await delivery.retry(delay=delay, error=reason)

    async def _park(self, delivery: Delivery, message: StepMessage, reason: str) -> None:
        log.error("message dead-lettered", step=self.step.value, reason=reason)
        await delivery.dead_letter(reason=reason)
        if self._on_dead_letter is None:
            return
        try:
            await self._on_dead_letter(message.transaction_id, reason)
        except Exception:  # the message is parked; the store may not know it
            # Left unparked, the sweep re-queues the request later: nothing is lost.
            log.exception("could not record the dead letter in the store", step=self.step.value)

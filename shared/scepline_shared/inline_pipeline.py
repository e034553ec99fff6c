"""A pipeline that runs every step in this process, one task per request.

It is the simplest ``Pipeline``: no broker, same handlers, same state machine.
Transient failures are retried with exponential backoff and jitter; a request
that still cannot move is left where it is for the ``Sweeper`` to pick up.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Mapping
from datetime import timedelta

from .log import bind_transaction, get_logger
from .pipeline import Permanent, Step, StepHandler, Transient, next_step
from .store.models import RequestState
from .store.repository import RequestRepository

__all__ = ["InlinePipeline", "Sweeper", "backoff_delay"]

log = get_logger(__name__)


def backoff_delay(attempt: int, *, base: float, cap: float) -> float:
    """Exponential backoff with full jitter (attempt counts from 0)."""
    return random.uniform(0, min(cap, base * 2**attempt))


class InlinePipeline:
    def __init__(
        self,
        *,
        repository: RequestRepository,
        handlers: Mapping[Step, StepHandler],
        max_attempts: int = 5,
        base_delay: float = 0.2,
        max_delay: float = 10.0,
    ) -> None:
        self._repository = repository
        self._handlers = dict(handlers)
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._running: dict[str, asyncio.Task[None]] = {}

    async def submit(self, transaction_id: str, step: Step = Step.VALIDATE) -> None:
        # The inline pipeline drives every step from the stored state itself.
        del step
        if transaction_id in self._running:
            return
        await self._repository.mark_queued(transaction_id)
        self._running[transaction_id] = asyncio.create_task(self._drive(transaction_id))

    async def wait_for_outcome(self, transaction_id: str, timeout: float) -> None:
        task = self._running.get(transaction_id)
        if task is not None:
            await asyncio.wait({task}, timeout=timeout)

    async def close(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _drive(self, transaction_id: str) -> None:
        with bind_transaction(transaction_id):
            try:
                view = await self._repository.get(transaction_id)
                step = next_step(view.state) if view is not None else None
                while step is not None:
                    state = await self._run_step(step, transaction_id)
                    step = next_step(state) if state is not None else None
            except Exception:
                log.exception("pipeline step crashed; the sweep will retry")
            finally:
                self._running.pop(transaction_id, None)

    async def _run_step(self, step: Step, transaction_id: str) -> RequestState | None:
        for attempt in range(self._max_attempts):
            try:
                return await self._handlers[step](transaction_id)
            except Transient as transient:
                delay = transient.defer or backoff_delay(
                    attempt, base=self._base_delay, cap=self._max_delay
                )
                log.warning(
                    "step failed transiently",
                    step=step.value,
                    attempt=attempt + 1,
                    reason=transient.reason,
                    retry_in=round(delay, 3),
                )
                await asyncio.sleep(delay)
            except Permanent as permanent:
                log.error("step failed permanently", step=step.value, reason=str(permanent))
                return None
        log.error("step gave up after retries; the sweep will retry", step=step.value)
        return None


class Sweeper:
    """Re-submits requests that were recorded but never finished (crash, outage)."""

    def __init__(
        self,
        *,
        repository: RequestRepository,
        pipeline: InlinePipeline,
        stale_after: timedelta = timedelta(seconds=60),
        interval: float = 30.0,
    ) -> None:
        self._repository = repository
        self._pipeline = pipeline
        self._stale_after = stale_after
        self._interval = interval
        self._stopped = asyncio.Event()

    async def sweep_once(self) -> int:
        stale = await self._repository.find_stale(older_than=self._stale_after, limit=500)
        for view in stale:
            await self._pipeline.submit(view.transaction_id)
        if stale:
            log.info("re-queued stale requests", count=len(stale))
        return len(stale)

    async def run(self) -> None:
        """Sweep every ``interval`` until ``stop()``; a sweep in progress finishes."""
        while not self._stopped.is_set():
            try:
                await self.sweep_once()
            except Exception:
                log.exception("sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self._interval)

    def stop(self) -> None:
        self._stopped.set()

"""The safety net: re-queue requests that were recorded but never finished.

A request can be left behind when the broker was down as ingress published it,
or when a process died between committing and publishing. The sweep finds
non-terminal requests untouched for a while (and not parked in a dead-letter
queue) and hands each back to the pipeline at the step its state calls for.
Handlers are idempotent, so a sweep that races a live worker is harmless.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from scepline_shared.log import get_logger
from scepline_shared.metrics import SWEPT_REQUESTS
from scepline_shared.periodic import repeat_until_stopped
from scepline_shared.pipeline import Pipeline, resume_step

from .ports import IngressStore

__all__ = ["Sweeper"]

log = get_logger(__name__)


class Sweeper:
    def __init__(
        self,
        *,
        repository: IngressStore,
        pipeline: Pipeline,
        stale_after: timedelta = timedelta(seconds=60),
        interval: float = 30.0,
        batch: int = 500,
    ) -> None:
        self._repository = repository
        self._pipeline = pipeline
        self._stale_after = stale_after
        self._interval = interval
        self._batch = batch
        self._stopped = asyncio.Event()

    async def sweep_once(self) -> int:
        stale = await self._repository.find_stale(older_than=self._stale_after, limit=self._batch)
        requeued = 0
        for view in stale:
            step = resume_step(view)
            if step is not None:
                await self._repository.mark_queued(view.transaction_id)
                await self._pipeline.submit(view.transaction_id, step)
                SWEPT_REQUESTS.labels(step.value).inc()
                requeued += 1
        if requeued:
            log.info("re-queued stale requests", count=requeued)
        return requeued

    async def run(self) -> None:
        """Sweep every ``interval`` until ``stop()``; a sweep in progress finishes."""
        await repeat_until_stopped(
            self._stopped, self._interval, self.sweep_once, failure="sweep failed"
        )

    def stop(self) -> None:
        self._stopped.set()

"""The safety net: re-queue requests that were recorded but never finished.

A request can be left behind when the broker was down as ingress published it,
or when a process died between committing and publishing. The sweep finds
non-terminal requests untouched for a while (and not parked in a dead-letter
queue) and hands each back to the pipeline at the step its state calls for.
Handlers are idempotent, so a sweep that races a live worker is harmless.

Requests AWAITING_APPROVAL are not the pipeline's: the sweep hands those an
operator approved to the sign step at once (`scepline request approve` cannot
reach an in-process broker), and fails those that waited longer than their
endpoint's ``approval_ttl_hours``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta

from scepline_shared.log import get_logger
from scepline_shared.metrics import SWEPT_REQUESTS
from scepline_shared.periodic import repeat_until_stopped
from scepline_shared.pipeline import Pipeline, Step, resume_step

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
        approval_ttls: Mapping[str, timedelta] | None = None,
    ) -> None:
        """``approval_ttls``: how long requests of each "manual" endpoint may wait
        for an operator."""
        self._approval_ttls = dict(approval_ttls or {})
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
        return requeued + await self._approvals()

    async def _approvals(self) -> int:
        """Approved requests to the sign step; unapproved ones past their time FAILED."""
        approved = await self._repository.approved_unqueued(limit=self._batch)
        for view in approved:
            await self._repository.mark_queued(view.transaction_id)
            await self._pipeline.submit(view.transaction_id, Step.SIGN, request=view)
            SWEPT_REQUESTS.labels(Step.SIGN.value).inc()
        if approved:
            log.info("approved requests handed to the sign step", count=len(approved))
        for endpoint, waited in self._approval_ttls.items():
            expired = await self._repository.expire_unapproved(
                endpoint=endpoint, waited=waited, limit=self._batch
            )
            for view in expired:
                log.info(
                    "request not approved in time",
                    transaction_id=view.transaction_id,
                    endpoint=endpoint,
                )
        return len(approved)

    async def run(self) -> None:
        """Sweep every ``interval`` until ``stop()``; a sweep in progress finishes."""
        await repeat_until_stopped(
            self._stopped, self._interval, self.sweep_once, failure="sweep failed"
        )

    def stop(self) -> None:
        self._stopped.set()

"""The pipeline as ingress sees it when the steps run in workers over a broker.

``submit`` publishes the first step; ``wait_for_outcome`` waits for the
broadcast that a request reached a final state (the store stays the truth:
ingress re-reads it after waking). An outcome that arrives before anyone waits
for it is remembered for a while, so a fast pipeline is never missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict

from scepline_shared.broker.base import Broker, BrokerUnavailable
from scepline_shared.log import get_logger
from scepline_shared.pipeline import Step
from scepline_shared.store.views import RequestView
from scepline_shared.worker import InlineSteps, hand_over

__all__ = ["BrokerPipeline"]

log = get_logger(__name__)

_REMEMBER_SECONDS = 120.0
_REMEMBER_AT_MOST = 100_000


class BrokerPipeline:
    """``inline``: steps ingress runs itself when it hands a request over (the
    static challenge: no queue hop for a check that calls nothing outside)."""

    def __init__(self, *, broker: Broker, inline: InlineSteps | None = None) -> None:
        self._broker = broker
        self._inline: InlineSteps = inline or {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._recent: OrderedDict[str, float] = OrderedDict()

    async def start(self) -> None:
        await self._broker.subscribe_outcomes(self._on_outcome)

    async def submit(
        self, transaction_id: str, step: Step = Step.VALIDATE, request: RequestView | None = None
    ) -> None:
        """Publish ``step`` for the request (``request``: as the caller has it,
        for steps inline only for some endpoints). If the broker is down the
        request stays recorded and the sweep publishes it later; the device gets
        PENDING. The caller records the hand-over (``queued_at``) in the store."""
        try:
            await hand_over(self._broker, transaction_id, step, self._inline, request)
        except BrokerUnavailable:
            log.warning("broker unavailable; the sweep will queue the request", step=step.value)

    async def wait_for_outcome(self, transaction_id: str, timeout: float) -> None:
        if transaction_id in self._recent:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(transaction_id, []).append(future)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, timeout)
        finally:
            waiters = self._waiters.get(transaction_id, [])
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._waiters.pop(transaction_id, None)

    def _on_outcome(self, transaction_id: str) -> None:
        for future in self._waiters.pop(transaction_id, []):
            if not future.done():
                future.set_result(None)
        self._remember(transaction_id)

    def _remember(self, transaction_id: str) -> None:
        now = time.monotonic()
        self._recent[transaction_id] = now
        self._recent.move_to_end(transaction_id)
        while self._recent and (
            len(self._recent) > _REMEMBER_AT_MOST
            or next(iter(self._recent.values())) < now - _REMEMBER_SECONDS
        ):
            self._recent.popitem(last=False)

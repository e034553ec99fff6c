"""Queue depths as the ``scepline_queue_messages{step,queue}`` gauge.

Ingress reads them from the broker every few seconds (each ingress replica
reports the same figures: aggregate with ``max``). Ingress, not the workers,
because a step whose workers are all down is exactly the one whose backlog an
operator must see. ``queue="dlq"`` above zero means requests wait for
``scepline dlq replay`` (or purge).
"""

from __future__ import annotations

import asyncio

from .broker.base import Broker, BrokerUnavailable
from .log import get_logger
from .metrics import QUEUE_MESSAGES
from .periodic import repeat_until_stopped
from .pipeline import Step

__all__ = ["QUEUE_KINDS", "QueueDepthReporter"]

log = get_logger(__name__)

# The queue kinds of each step, as Broker.queue_depths() names them.
QUEUE_KINDS = ("work", "retry", "dlq")


class QueueDepthReporter:
    def __init__(self, broker: Broker, *, interval: float) -> None:
        self._broker = broker
        self._interval = interval
        self._stopped = asyncio.Event()

    async def report_once(self) -> bool:
        """Read the depths and set the gauge; False (gauge unchanged) while the
        broker cannot answer."""
        try:
            depths = await self._broker.queue_depths()
        except BrokerUnavailable as outage:
            log.warning("queue depths unavailable", error=str(outage))
            return False
        for step in Step:
            for kind in QUEUE_KINDS:
                QUEUE_MESSAGES.labels(step.value, kind).set(depths[f"{step.value}.{kind}"])
        return True

    async def run(self) -> None:
        """Report every ``interval`` seconds until :meth:`stop`."""
        await repeat_until_stopped(
            self._stopped, self._interval, self.report_once, failure="queue depth report failed"
        )

    def stop(self) -> None:
        self._stopped.set()

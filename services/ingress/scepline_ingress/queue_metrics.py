"""Queue depths as the ``scepline_queue_messages{step,queue}`` gauge.

Ingress reads them from the broker every few seconds (each ingress replica
reports the same figures: aggregate with ``max``). Ingress, not the workers,
because a step whose workers are all down is exactly the one whose backlog an
operator must see. ``queue="dlq"`` above zero means requests wait for
``scepline dlq replay`` (or purge); dead letters whose request finished anyway
(``dead_letters.py``) are reported apart, as ``queue="dlq_resolved"``, so that
an alert on ``dlq > 0`` means an operator is needed.
"""

from __future__ import annotations

import asyncio

from scepline_shared.broker.base import Broker, BrokerUnavailable
from scepline_shared.log import get_logger
from scepline_shared.metrics import QUEUE_MESSAGES
from scepline_shared.periodic import repeat_until_stopped
from scepline_shared.pipeline import Step

from .dead_letters import resolved_letters
from .ports import IngressStore

__all__ = ["QUEUE_KINDS", "RESOLVED_DEAD_LETTERS", "QueueDepthReporter"]

log = get_logger(__name__)

# The queue kinds of each step, as Broker.queue_depths() names them.
QUEUE_KINDS = ("work", "retry", "dlq")
# The dead letters that need nobody; "dlq" counts the others.
RESOLVED_DEAD_LETTERS = "dlq_resolved"

# Telling resolved letters apart means reading every letter of the step (one
# broker round trip each on RabbitMQ), every report. Beyond this many, all
# count as waiting: so long a queue needs an operator anyway.
CLASSIFY_AT_MOST = 1000


class QueueDepthReporter:
    def __init__(self, broker: Broker, repository: IngressStore, *, interval: float) -> None:
        self._broker = broker
        self._repository = repository
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
            for kind in ("work", "retry"):
                QUEUE_MESSAGES.labels(step.value, kind).set(depths[f"{step.value}.{kind}"])
            await self._report_dead_letters(step, depths[f"{step.value}.dlq"])
        return True

    async def _report_dead_letters(self, step: Step, depth: int) -> None:
        waiting, resolved = depth, 0
        # Usually there are none, and then neither the DLQ nor the store is read.
        if 0 < depth <= CLASSIFY_AT_MOST:
            try:
                letters = await self._broker.dead_letters(step, limit=CLASSIFY_AT_MOST)
                resolved = len(await resolved_letters(self._repository, letters))
            except Exception as error:  # noqa: BLE001 - the broker or the store is down
                # Keep the last figures: this outage has alerts of its own.
                log.warning("dead letters not classified", step=step.value, error=repr(error))
                return
            waiting = len(letters) - resolved
        QUEUE_MESSAGES.labels(step.value, "dlq").set(waiting)
        QUEUE_MESSAGES.labels(step.value, RESOLVED_DEAD_LETTERS).set(resolved)

    async def run(self) -> None:
        """Report every ``interval`` seconds until :meth:`stop`."""
        await repeat_until_stopped(
            self._stopped, self._interval, self.report_once, failure="queue depth report failed"
        )

    def stop(self) -> None:
        self._stopped.set()

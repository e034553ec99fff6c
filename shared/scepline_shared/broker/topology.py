"""RabbitMQ names and queue arguments, declared the same way by every process.

Per step ``s`` in namespace ``ns``::

    {ns}.work            durable direct exchange, routing key = step
    {ns}.{s}             work queue (quorum), bound to {ns}.work with key s
    {ns}.{s}.retry.{t}s  delay queue per tier t (quorum, no consumer): expired
                         messages are dead-lettered back to {ns}.work / s
    {ns}.{s}.dlq         dead letters (quorum), for an operator to list/replay/purge
    {ns}.outcomes        durable fanout exchange; every subscriber binds its own
                         exclusive, auto-delete queue {ns}.outcomes.<random>

Queue arguments are fixed at declaration: RabbitMQ refuses a re-declaration
with different ones (PRECONDITION_FAILED), so changing them later means a
policy or a migration, not an edit here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel, AbstractExchange

from ..messages import Step
from .base import DELIVERY_LIMIT, MAX_RETRY_DELAY, validate_namespace

__all__ = ["RETRY_TIERS", "Declared", "Topology", "declare_topology", "retry_tier"]

# Delay-queue tiers, in seconds. An expired message leaves a queue only from its
# head, so a short TTL queued behind a long one waits for the long one. Each
# tier holds only TTLs in (previous tier, tier], which bounds that head-of-line
# wait by the tier's own size instead of the largest delay in use.
# The last tier holds the longest retry there is.
RETRY_TIERS: tuple[int, ...] = (1, 5, 30, 120, int(MAX_RETRY_DELAY))

_QUORUM: dict[str, Any] = {"x-queue-type": "quorum"}
# at-least-once dead-lettering (RabbitMQ >= 3.10, feature flag stream_queue) keeps
# a message in the source queue until the target confirmed it, so an expiring
# retry or a poison message cannot vanish in between; it requires reject-publish.
_AT_LEAST_ONCE: dict[str, Any] = {
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


@dataclass(frozen=True)
class Topology:
    namespace: str

    def __post_init__(self) -> None:
        validate_namespace(self.namespace)

    @property
    def work_exchange(self) -> str:
        return f"{self.namespace}.work"

    @property
    def outcomes_exchange(self) -> str:
        return f"{self.namespace}.outcomes"

    def work_queue(self, step: Step) -> str:
        return f"{self.namespace}.{step.value}"

    def retry_queue(self, step: Step, tier: int) -> str:
        return f"{self.namespace}.{step.value}.retry.{tier}s"

    def dead_letter_queue(self, step: Step) -> str:
        return f"{self.namespace}.{step.value}.dlq"

    def retry_queues(self, step: Step) -> list[str]:
        return [self.retry_queue(step, tier) for tier in RETRY_TIERS]

    def queue_names(self) -> list[str]:
        """Every durable queue (not the per-subscriber outcome queues)."""
        names: list[str] = []
        for step in Step:
            names += [self.work_queue(step), *self.retry_queues(step), self.dead_letter_queue(step)]
        return names

    def exchange_names(self) -> list[str]:
        return [self.work_exchange, self.outcomes_exchange]

    def work_queue_arguments(self, step: Step) -> dict[str, Any]:
        # A consumer that crashes on a message (instead of settling it) would
        # otherwise see it forever: after DELIVERY_LIMIT redeliveries RabbitMQ
        # parks it in the DLQ itself (the default exchange routes by queue name).
        return {
            **_QUORUM,
            **_AT_LEAST_ONCE,
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.dead_letter_queue(step),
        }

    def retry_queue_arguments(self, step: Step) -> dict[str, Any]:
        return {
            **_QUORUM,
            **_AT_LEAST_ONCE,
            "x-dead-letter-exchange": self.work_exchange,
            "x-dead-letter-routing-key": step.value,
        }

    def dead_letter_queue_arguments(self) -> dict[str, Any]:
        return dict(_QUORUM)


def retry_tier(delay: float) -> int:
    """The smallest tier that holds ``delay``; the largest tier caps it."""
    return next((tier for tier in RETRY_TIERS if tier >= delay), RETRY_TIERS[-1])


@dataclass(frozen=True)
class Declared:
    work: AbstractExchange
    outcomes: AbstractExchange


async def declare_topology(channel: AbstractChannel, topology: Topology) -> Declared:
    """Declare every exchange, queue and binding; safe to repeat from any process.

    On a robust channel aio-pika records these and declares them again after a
    reconnection (a restarted single-node broker keeps durable ones anyway).
    """
    work = await channel.declare_exchange(topology.work_exchange, ExchangeType.DIRECT, durable=True)
    outcomes = await channel.declare_exchange(
        topology.outcomes_exchange, ExchangeType.FANOUT, durable=True
    )
    for step in Step:
        # The DLQ first: the work queue dead-letters into it.
        await channel.declare_queue(
            topology.dead_letter_queue(step),
            durable=True,
            arguments=topology.dead_letter_queue_arguments(),
        )
        queue = await channel.declare_queue(
            topology.work_queue(step), durable=True, arguments=topology.work_queue_arguments(step)
        )
        await queue.bind(work, routing_key=step.value)
        for name in topology.retry_queues(step):
            await channel.declare_queue(
                name, durable=True, arguments=topology.retry_queue_arguments(step)
            )
    return Declared(work=work, outcomes=outcomes)

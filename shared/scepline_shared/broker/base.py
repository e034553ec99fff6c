"""The broker contract every pipeline process codes against.

Two implementations keep the same semantics: ``MemoryBroker`` (embedded mode,
one process) and ``RabbitMqBroker`` (production). One contract test suite runs
against both, so a worker tested on one behaves the same on the other.

Delivery is at-least-once: a message is settled (ack, retry or dead letter)
only after the consumer's work is committed, and anything unsettled comes back.
Consumers are idempotent; the state store, not the broker, is the truth.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection
from typing import Protocol
from urllib.parse import urlsplit

from ..backoff import spread_upwards
from ..messages import DeadLetter, Step, StepMessage

__all__ = [
    "DELIVERY_LIMIT",
    "MAX_RETRY_DELAY",
    "RETRY_JITTER",
    "Broker",
    "BrokerConfigError",
    "BrokerUnavailable",
    "Consumer",
    "Delivery",
    "DeliveryAlreadySettled",
    "clip_reason",
    "create_broker",
    "jittered",
    "validate_namespace",
]

# A message whose consumer keeps crashing (rather than settling it) is parked in
# the DLQ after this many redeliveries instead of spinning forever. Generous,
# because a worker killed mid-message also counts as a redelivery.
DELIVERY_LIMIT = 20

# The longest a retry waits, whatever the caller asks: the largest RabbitMQ
# delay tier. Both brokers cap alike so that embedded mode behaves the same.
MAX_RETRY_DELAY = 600.0

# Retries are spread upwards by at most this fraction so that messages failing
# together do not all come back in the same instant.
RETRY_JITTER = 0.1

_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,100}")

# Reasons end up in AMQP headers and operator screens; a stack trace does not fit.
_MAX_REASON = 2000


class BrokerUnavailable(Exception):
    """The broker could not take or confirm the operation (down, unroutable, timed out)."""


class BrokerConfigError(ValueError):
    """An unsupported broker URL or an invalid namespace."""


class DeliveryAlreadySettled(RuntimeError):
    """ack/retry/dead_letter called on a delivery that was already settled."""


class Delivery(Protocol):
    """One delivered message; settle it exactly once."""

    message: StepMessage | None
    """None when the body was unreadable; a worker must dead-letter it."""
    raw: bytes

    async def ack(self) -> None:
        """Done with this message."""
        ...

    async def retry(self, *, delay: float, error: str) -> None:
        """Re-deliver a copy with attempt + 1 after about ``delay`` seconds (never
        sooner; capped at ``MAX_RETRY_DELAY``), then ack this one. An unreadable
        message cannot be retried: it is dead-lettered instead."""
        ...

    async def dead_letter(self, *, reason: str) -> None:
        """Park a copy in the step's dead-letter queue with ``reason``, then ack this one."""
        ...


Consumer = Callable[[Delivery], Awaitable[None]]


class Broker(Protocol):
    async def start(self) -> None:
        """Connect and declare the whole topology, idempotently (every process calls it)."""
        ...

    async def close(self) -> None:
        """Stop consuming, let in-flight deliveries finish briefly, disconnect."""
        ...

    async def publish(self, message: StepMessage) -> None:
        """Queue ``message`` on its step's work queue, persistent and confirmed;
        raises ``BrokerUnavailable`` if it could not be confirmed in time."""
        ...

    async def consume(self, step: Step, consumer: Consumer, *, prefetch: int) -> None:
        """Run ``consumer`` on ``step``'s messages in the background until ``close()``,
        at most ``prefetch`` at a time. If it raises (or returns without settling),
        the message is not acked and comes back."""
        ...

    async def publish_outcome(self, transaction_id: str) -> None:
        """Tell every subscriber "transaction X reached a final state". Best-effort:
        never raises for broker trouble (the state store stays the truth)."""
        ...

    async def subscribe_outcomes(self, callback: Callable[[str], None]) -> None:
        """Call ``callback`` in this process for every outcome published from now on."""
        ...

    async def dead_letters(self, step: Step, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of ``step``, without removing them."""
        ...

    async def replay(self, step: Step, *, ids: Collection[str] | None = None) -> int:
        """Move dead letters (all, or those ``ids``) back to the work queue with
        attempt 1 and enqueued_at now; returns how many moved. An unreadable body
        is replayed unchanged (a newer worker may read it)."""
        ...

    async def purge(self, step: Step, *, ids: Collection[str] | None = None) -> int:
        """Delete dead letters (all, or those ``ids``); returns how many."""
        ...

    async def queue_depths(self) -> dict[str, int]:
        """Messages waiting per queue kind: ``"<step>.work"``, ``"<step>.retry"``,
        ``"<step>.dlq"``. Work counts exclude deliveries in flight."""
        ...

    @property
    def healthy(self) -> bool:
        """Connected right now."""
        ...


def jittered(delay: float) -> float:
    """A retry's delay capped at ``MAX_RETRY_DELAY`` and spread upwards by up to
    ``RETRY_JITTER``: a retry never comes early."""
    return spread_upwards(delay, cap=MAX_RETRY_DELAY, fraction=RETRY_JITTER)


def validate_namespace(namespace: str) -> str:
    # AMQP reserves "amq." names; dots and dashes keep names readable in the UI.
    if not _NAMESPACE.fullmatch(namespace) or namespace.startswith("amq."):
        raise BrokerConfigError(f"invalid broker namespace {namespace!r}")
    return namespace


def clip_reason(reason: str) -> str:
    return reason if len(reason) <= _MAX_REASON else reason[: _MAX_REASON - 1] + "…"


def create_broker(url: str, *, namespace: str = "scepline") -> Broker:
    """``memory://`` (in-process) or ``amqp://…`` / ``amqps://…`` (RabbitMQ).

    ``namespace`` prefixes every exchange and queue name, so several deployments
    (or tests) can share one RabbitMQ vhost.
    """
    scheme = urlsplit(url).scheme.lower()
    # Imported here: the implementations import this module, and embedded mode
    # need not load aio-pika at all.
    if scheme == "memory":
        from .memory import MemoryBroker

        return MemoryBroker(namespace=namespace)
    if scheme in ("amqp", "amqps"):
        from .rabbitmq import RabbitMqBroker

        return RabbitMqBroker(url, namespace=namespace)
    raise BrokerConfigError(
        f"unsupported broker URL scheme {scheme!r}: use memory:// or amqp(s)://"
    )

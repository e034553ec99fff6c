"""An in-process broker with RabbitMQ's delivery semantics, for embedded mode.

``scepline up`` runs every service in one process; this broker connects them
with the same contract as ``RabbitMqBroker``: an unsettled delivery comes back,
``retry`` really waits (an asyncio timer) and counts the attempt, dead letters
are kept for listing, replay and purge, prefetch bounds what is in flight, and
a consumer that keeps crashing on a message sees it parked after
``DELIVERY_LIMIT`` redeliveries.

Nothing here survives a restart, and need not: the state store records every
request before it is queued, and the sweep re-queues whatever is not final.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from ..log import get_logger
from ..messages import DeadLetter, MalformedMessage, Step, StepMessage, utc_now
from .base import (
    DELIVERY_LIMIT,
    BrokerUnavailable,
    Consumer,
    DeliveryAlreadySettled,
    clip_reason,
    jittered,
    validate_namespace,
)

__all__ = ["MemoryBroker"]

log = get_logger(__name__)


@dataclass
class _Envelope:
    body: bytes
    redeliveries: int = 0


class _WorkQueue:
    """A FIFO that can put a redelivered message back at the front."""

    def __init__(self) -> None:
        self._items: deque[_Envelope] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, envelope: _Envelope, *, front: bool = False) -> None:
        if front:
            self._items.appendleft(envelope)
        else:
            self._items.append(envelope)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def get(self) -> _Envelope:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # If we were woken and cancelled at once, pass the wake-up on.
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()
                raise
        return self._items.popleft()


@dataclass
class _StepState:
    work: _WorkQueue = field(default_factory=_WorkQueue)
    retries: set[asyncio.TimerHandle] = field(default_factory=set)
    dead: list[DeadLetter] = field(default_factory=list)


def _parse(raw: bytes) -> StepMessage | None:
    try:
        return StepMessage.from_bytes(raw)
    except MalformedMessage:
        return None


class _MemoryDelivery:
    def __init__(self, broker: MemoryBroker, step: Step, envelope: _Envelope) -> None:
        self.raw = envelope.body
        self.message = _parse(envelope.body)
        self.settled = False
        self._broker = broker
        self._step = step

    def _settle(self) -> None:
        if self.settled:
            raise DeliveryAlreadySettled("this delivery was already settled")
        self._broker._check_running()
        self.settled = True

    async def ack(self) -> None:
        self._settle()

    async def retry(self, *, delay: float, error: str) -> None:
        if self.message is None:
            await self.dead_letter(reason=f"unreadable message cannot be retried: {error}")
            return
        self._settle()
        self._broker._retry_later(self._step, self.message, delay=delay, error=error)

    async def dead_letter(self, *, reason: str) -> None:
        self._settle()
        self._broker._park(self._step, self.raw, reason)


class MemoryBroker:
    """The in-process broker (see the module docstring); one per process."""

    def __init__(self, *, namespace: str = "scepline", close_grace: float = 5.0) -> None:
        self.namespace = validate_namespace(namespace)
        self._close_grace = close_grace
        self._steps = {step: _StepState() for step in Step}
        self._subscribers: list[Callable[[str], None]] = []
        self._dispatchers: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._running = False
        self._closing = False

    def __repr__(self) -> str:
        return f"MemoryBroker(namespace={self.namespace!r})"

    @property
    def healthy(self) -> bool:
        return self._running and not self._closing

    def _check_running(self) -> None:
        if not self._running:
            raise BrokerUnavailable("the in-process broker is not running")

    async def start(self) -> None:
        self._running = True

    async def close(self) -> None:
        if not self._running or self._closing:
            return
        self._closing = True
        for dispatcher in self._dispatchers:
            dispatcher.cancel()
        await asyncio.gather(*self._dispatchers, return_exceptions=True)
        self._dispatchers.clear()
        # Let deliveries in flight settle, as a draining worker would.
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=self._close_grace)
        self._running = self._closing = False
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        for state in self._steps.values():
            for handle in state.retries:
                handle.cancel()
            state.retries.clear()

    async def publish(self, message: StepMessage) -> None:
        self._check_running()
        # Through bytes, as on the wire, so both brokers validate the same way.
        self._steps[message.step].work.put(_Envelope(message.to_bytes()))

    def publish_raw(self, step: Step, body: bytes) -> None:
        """Queue an arbitrary body on ``step``'s work queue (tests, tooling)."""
        self._check_running()
        self._steps[step].work.put(_Envelope(body))

    async def consume(self, step: Step, consumer: Consumer, *, prefetch: int) -> None:
        self._check_running()
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self._dispatchers.append(asyncio.create_task(self._dispatch(step, consumer, prefetch)))

    async def _dispatch(self, step: Step, consumer: Consumer, prefetch: int) -> None:
        slots = asyncio.Semaphore(prefetch)
        queue = self._steps[step].work
        while True:
            await slots.acquire()
            try:
                envelope = await queue.get()
            except asyncio.CancelledError:
                slots.release()
                raise
            task = asyncio.create_task(self._deliver(step, consumer, envelope, slots))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _deliver(
        self, step: Step, consumer: Consumer, envelope: _Envelope, slots: asyncio.Semaphore
    ) -> None:
        delivery = _MemoryDelivery(self, step, envelope)
        try:
            await consumer(delivery)
            if not delivery.settled:
                log.error("consumer returned without settling; redelivering", step=step.value)
        except Exception:
            log.exception("consumer failed; redelivering", step=step.value)
        finally:
            # Unsettled (raised, forgot, or cancelled by close): back it goes.
            if not delivery.settled:
                self._redeliver(step, envelope)
            slots.release()

    def _redeliver(self, step: Step, envelope: _Envelope) -> None:
        envelope.redeliveries += 1
        if envelope.redeliveries > DELIVERY_LIMIT:
            self._park(
                step,
                envelope.body,
                f"delivery limit exceeded: redelivered more than {DELIVERY_LIMIT} times",
            )
            return
        self._steps[step].work.put(envelope, front=True)

    def _retry_later(self, step: Step, message: StepMessage, *, delay: float, error: str) -> None:
        state = self._steps[step]
        ttl = jittered(delay)
        due_at = utc_now() + dt.timedelta(seconds=ttl)
        body = message.next_attempt(error=clip_reason(error), due_at=due_at).to_bytes()

        def due() -> None:
            state.retries.discard(handle)
            state.work.put(_Envelope(body))

        handle = asyncio.get_running_loop().call_later(ttl, due)
        state.retries.add(handle)

    def _park(self, step: Step, raw: bytes, reason: str) -> None:
        self._steps[step].dead.append(
            DeadLetter(
                id=uuid.uuid4().hex,
                step=step,
                message=_parse(raw),
                raw=raw,
                reason=clip_reason(reason),
                dead_at=utc_now(),
            )
        )

    async def publish_outcome(self, transaction_id: str) -> None:
        if not self._running:
            log.warning("outcome not broadcast: broker closed", transaction_id=transaction_id)
            return
        loop = asyncio.get_running_loop()
        for callback in list(self._subscribers):
            # Later, not inline: as over AMQP, the publisher never runs subscriber code.
            loop.call_soon(self._notify, callback, transaction_id)

    @staticmethod
    def _notify(callback: Callable[[str], None], transaction_id: str) -> None:
        try:
            callback(transaction_id)
        except Exception:
            log.exception("outcome subscriber failed", transaction_id=transaction_id)

    async def subscribe_outcomes(self, callback: Callable[[str], None]) -> None:
        self._check_running()
        self._subscribers.append(callback)

    async def dead_letters(self, step: Step, *, limit: int = 100) -> list[DeadLetter]:
        self._check_running()
        return list(self._steps[step].dead[: max(limit, 0)])

    def _take(self, step: Step, ids: Collection[str] | None) -> list[DeadLetter]:
        state = self._steps[step]
        wanted = None if ids is None else set(ids)
        taken = [dead for dead in state.dead if wanted is None or dead.id in wanted]
        state.dead = [dead for dead in state.dead if wanted is not None and dead.id not in wanted]
        return taken

    async def replay(self, step: Step, *, ids: Collection[str] | None = None) -> int:
        self._check_running()
        taken = self._take(step, ids)
        for dead in taken:
            body = dead.raw if dead.message is None else dead.message.replayed().to_bytes()
            self._steps[step].work.put(_Envelope(body))
        return len(taken)

    async def purge(self, step: Step, *, ids: Collection[str] | None = None) -> int:
        self._check_running()
        return len(self._take(step, ids))

    async def queue_depths(self) -> dict[str, int]:
        self._check_running()
        depths: dict[str, int] = {}
        for step, state in self._steps.items():
            depths[f"{step.value}.work"] = len(state.work)
            depths[f"{step.value}.retry"] = len(state.retries)
            depths[f"{step.value}.dlq"] = len(state.dead)
        return depths

"""Operator views over RabbitMQ: list, replay and purge dead letters; queue depths.

Listing must not lose or reorder messages, yet AMQP has no "peek": each
operation gets messages unacked on a channel of its own, acks the ones it
removes, and closes the channel, which hands every other one back.

A quorum queue (RabbitMQ 3.10) puts a returned message at the back, not at its
old place. So every operation walks the whole queue - as many messages as it
held at the start - even to show ten: returned all together, in the order they
were taken, they keep their order. A DLQ of n messages costs n gets per call;
dead letters that arrive during a walk end up ahead of the walked ones.

Letters held by one walk are invisible to another, which would miss them (a
replay would leave them behind while ingress reads the DLQ for its metrics).
So operations on one DLQ take turns, across processes too: see ``_taking_turns``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel
from aiormq.exceptions import ChannelLockedResource

from ..log import get_logger
from ..messages import DeadLetter, Step
from ._amqp import bounded, to_dead_letter
from .base import BrokerUnavailable
from .topology import Topology

__all__ = ["AmqpAdmin", "Republish"]

log = get_logger(__name__)

# Puts a dead letter's (replayed) body back on the step's work queue, confirmed.
Republish = Callable[[Step, bytes], Awaitable[None]]
# Sees one dead letter, unacked; returns True if it acked (removed) it.
Visit = Callable[[AbstractIncomingMessage], Awaitable[bool]]


class AmqpAdmin:
    def __init__(
        self,
        *,
        topology: Topology,
        open_channel: Callable[[], Awaitable[AbstractRobustChannel]],
        timeout: float,
    ) -> None:
        self._topology = topology
        self._open_channel = open_channel
        self._timeout = timeout
        # An exclusive queue shuts out other connections only; tasks of this
        # process take turns on these.
        self._turns = {step: asyncio.Lock() for step in Step}

    async def _release(self, channel: AbstractRobustChannel) -> None:
        with contextlib.suppress(BrokerUnavailable):
            await bounded(channel.close(), timeout=self._timeout, what="close channel")

    async def _passive(self, channel: AbstractRobustChannel, name: str) -> AbstractQueue:
        # Passive: never (re)declares, and reports how many messages are ready.
        # Not robust: the channel is closed right after, there is nothing to restore.
        return await bounded(
            channel.declare_queue(name, passive=True, robust=False),
            timeout=self._timeout,
            what=f"open queue {name}",
        )

    async def _get(self, queue: AbstractQueue) -> AbstractIncomingMessage | None:
        return await bounded(
            queue.get(no_ack=False, fail=False, timeout=self._timeout),
            timeout=self._timeout,
            what="get",
        )

    @contextlib.asynccontextmanager
    async def _taking_turns(self, step: Step) -> AsyncIterator[None]:
        """Have ``step``'s DLQ to ourselves, waiting up to the timeout for it.

        The turn is an exclusive queue beside the DLQ: one connection at a time
        can declare it, and RabbitMQ deletes it with its connection, so a
        process that dies in its turn does not keep it."""
        async with self._turns[step]:
            name = f"{self._topology.dead_letter_queue(step)}.turn"
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._timeout
            while True:
                channel = await self._open_channel()
                try:
                    turn = await bounded(
                        channel.declare_queue(name, exclusive=True, robust=False),
                        timeout=self._timeout,
                        what=f"take a turn on {name}",
                    )
                    break
                except BrokerUnavailable as error:
                    await self._release(channel)
                    if not isinstance(error.__cause__, ChannelLockedResource):
                        raise
                    if loop.time() > deadline:
                        raise BrokerUnavailable(
                            f"{name}: another process is still reading these dead letters"
                        ) from error
                await asyncio.sleep(0.02)
            try:
                yield
            finally:
                with contextlib.suppress(BrokerUnavailable):
                    await bounded(turn.delete(), timeout=self._timeout, what=f"delete {name}")
                await self._release(channel)

    async def _walk(self, step: Step, visit: Visit) -> None:
        """Show ``visit`` every message the DLQ held when called, oldest first.

        Bounded by the count at the start, so a replayed message that fails
        again and lands behind us cannot keep the walk going forever."""
        async with self._taking_turns(step):
            name = self._topology.dead_letter_queue(step)
            channel = await self._open_channel()
            walked = removed = 0
            try:
                queue = await self._passive(channel, name)
                remaining = queue.declaration_result.message_count or 0
                while remaining > 0:
                    incoming = await self._get(queue)
                    if incoming is None:
                        break
                    remaining -= 1
                    walked += 1
                    removed += await visit(incoming)
            finally:
                await self._release(channel)
            await self._returned(name, walked - removed)

    async def _returned(self, name: str, expected: int) -> None:
        """Wait until the messages handed back are ready again.

        A quorum queue applies the return of a closed channel's messages
        asynchronously (a Raft command), after close-ok: without this wait the
        next listing, or the count a replay starts from, can miss them."""
        if expected <= 0:
            return
        channel = await self._open_channel()
        try:
            deadline = asyncio.get_running_loop().time() + self._timeout
            while asyncio.get_running_loop().time() < deadline:
                queue = await self._passive(channel, name)
                if (queue.declaration_result.message_count or 0) >= expected:
                    return
                await asyncio.sleep(0.02)
            log.warning("dead letters not yet back in their queue", queue=name, expected=expected)
        finally:
            await self._release(channel)

    async def dead_letters(self, step: Step, *, limit: int) -> list[DeadLetter]:
        found: list[DeadLetter] = []

        async def keep(incoming: AbstractIncomingMessage) -> bool:
            # Walk on past the limit all the same: see the module docstring.
            if len(found) < limit:
                found.append(to_dead_letter(step, incoming))
            return False

        await self._walk(step, keep)
        return found

    async def purge_all(self, step: Step) -> int:
        async with self._taking_turns(step):  # a purge leaves letters held by a walk
            channel = await self._open_channel()
            try:
                queue = await self._passive(channel, self._topology.dead_letter_queue(step))
                result = await bounded(queue.purge(), timeout=self._timeout, what="purge")
            finally:
                await self._release(channel)
        return int(result.message_count or 0)

    async def take(
        self, step: Step, ids: Collection[str] | None, *, republish: Republish | None
    ) -> int:
        """Remove the chosen dead letters (all when ``ids`` is None), republishing
        each first when ``republish`` is given; returns how many were removed."""
        wanted = None if ids is None else set(ids)
        if wanted is not None and not wanted:
            return 0

        taken = 0

        async def remove(incoming: AbstractIncomingMessage) -> bool:
            nonlocal taken
            dead = to_dead_letter(step, incoming)
            if wanted is not None and dead.id not in wanted:
                return False  # stays unacked until the channel closes
            if republish is not None:
                # A crash between this publish and the ack leaves a copy in
                # both queues: a duplicate, which consumers tolerate.
                body = dead.raw if dead.message is None else dead.message.replayed().to_bytes()
                await republish(step, body)
            await bounded(incoming.ack(), timeout=self._timeout, what="ack")
            taken += 1
            return True

        await self._walk(step, remove)
        return taken

    async def queue_depths(self) -> dict[str, int]:
        channel = await self._open_channel()

        async def ready(name: str) -> int:
            queue = await self._passive(channel, name)
            return int(queue.declaration_result.message_count or 0)

        depths: dict[str, int] = {}
        try:
            for step in Step:
                depths[f"{step.value}.work"] = await ready(self._topology.work_queue(step))
                retry = 0
                for name in self._topology.retry_queues(step):
                    retry += await ready(name)
                depths[f"{step.value}.retry"] = retry
                depths[f"{step.value}.dlq"] = await ready(self._topology.dead_letter_queue(step))
        finally:
            await self._release(channel)
        return depths

"""The production broker: RabbitMQ through aio-pika (topology in ``topology.py``).

Work and retry queues are durable quorum queues, messages persistent, every
publish confirmed and mandatory (an unroutable message is an error, not a
silent drop). Consumers ack manually, after the store has committed.

``connect_robust`` reconnects after a broker restart and declares again the
exchanges, queues, bindings, QoS and consumers made through it. In between,
every operation waits at most ``timeout`` seconds and then raises
``BrokerUnavailable``: callers fall back on the state store and the sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import Callable, Collection

import aio_pika
from aio_pika import DeliveryMode, Message
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aiormq import spec
from aiormq.exceptions import ChannelInvalidStateError

from ..log import get_logger
from ..messages import DeadLetter, Step, StepMessage, utc_now
from ._amqp import (
    AMQP_FAILURES,
    bounded,
    dead_letter_headers,
    parse_body,
    persistent_message,
    persistent_properties,
)
from ._amqp_admin import AmqpAdmin
from .base import (
    BrokerUnavailable,
    Consumer,
    DeliveryAlreadySettled,
    clip_reason,
    jittered,
)
from .topology import Declared, Topology, declare_topology, retry_tier

__all__ = ["RabbitMqBroker"]

log = get_logger(__name__)

_CONNECT_FAILURES: tuple[type[BaseException], ...] = (TimeoutError, *AMQP_FAILURES)

_OUTCOME_PROPERTIES = spec.Basic.Properties(
    content_type="text/plain", delivery_mode=DeliveryMode.NOT_PERSISTENT.value
)


async def _basic_publish(
    channel: AbstractRobustChannel,
    body: bytes,
    *,
    exchange: str,
    routing_key: str,
    properties: spec.Basic.Properties,
    mandatory: bool,
) -> None:
    """What aio-pika's ``Exchange.publish`` does, without building a ``Message``:
    the robust channel waits for a reconnection, then aiormq publishes (and, on
    a confirming channel, raises for a nack, or an unroutable mandatory message)."""
    if channel.is_closed:
        raise ChannelInvalidStateError(f"{channel!r} closed")
    underlay = await channel.get_underlay_channel()
    await underlay.basic_publish(
        body,
        exchange=exchange,
        routing_key=routing_key,
        properties=properties,
        mandatory=mandatory,
    )


class _AmqpDelivery:
    def __init__(
        self, broker: RabbitMqBroker, step: Step, incoming: AbstractIncomingMessage
    ) -> None:
        self.raw = bytes(incoming.body)
        self.message = parse_body(self.raw)
        self.settled = False
        self._broker = broker
        self._step = step
        self._incoming = incoming

    def _check(self) -> None:
        if self.settled:
            raise DeliveryAlreadySettled("this delivery was already settled")

    async def _ack(self) -> None:
        # If the channel died meanwhile the ack fails and RabbitMQ redelivers:
        # a duplicate, which consumers tolerate, never a loss.
        await bounded(self._incoming.ack(), timeout=self._broker.timeout, what="ack")
        self.settled = True

    async def ack(self) -> None:
        self._check()
        await self._ack()

    async def retry(self, *, delay: float, error: str) -> None:
        if self.message is None:
            await self.dead_letter(reason=f"unreadable message cannot be retried: {error}")
            return
        self._check()
        await self._broker._publish_retry(self._step, self.message, delay=delay, error=error)
        await self._ack()

    async def dead_letter(self, *, reason: str) -> None:
        self._check()
        await self._broker._publish_dead(self._step, self._incoming, reason)
        await self._ack()


class RabbitMqBroker:
    """See the module docstring. One instance per process; call ``start()`` first."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "scepline",
        timeout: float = 5.0,
        close_grace: float = 10.0,
    ) -> None:
        self.topology = Topology(namespace)
        self.timeout = timeout
        self._url = url
        self._close_grace = close_grace
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._declared: Declared | None = None
        self._outcome_channel: AbstractChannel | None = None
        # Outcomes are hints (ingress re-reads the store, and falls back on its
        # wait timeout): they go out on a channel without publisher confirms.
        self._hint_channel: AbstractRobustChannel | None = None
        # Holding the consumer channels matters: the robust connection tracks its
        # channels weakly, and restores only those still alive.
        self._consumers: list[tuple[AbstractChannel, AbstractQueue, str]] = []
        self._inflight: set[asyncio.Task[object]] = set()
        self._closing = False
        self._admin = AmqpAdmin(
            topology=self.topology, open_channel=self._admin_channel, timeout=timeout
        )

    def __repr__(self) -> str:
        return f"RabbitMqBroker(namespace={self.topology.namespace!r})"

    @property
    def healthy(self) -> bool:
        connection = self._connection
        return (
            connection is not None
            and not self._closing
            and not connection.is_closed
            and connection.connected.is_set()
        )

    def _require(self) -> tuple[AbstractRobustConnection, AbstractChannel, Declared]:
        # Still usable while closing: deliveries in flight settle and publish.
        if self._connection is None or self._channel is None:
            raise BrokerUnavailable("RabbitMQ broker not started, or closed")
        assert self._declared is not None
        return self._connection, self._channel, self._declared

    async def start(self) -> None:
        if self._connection is not None:
            return
        try:
            connection = await aio_pika.connect_robust(
                self._url,
                timeout=self.timeout,
                client_properties={"connection_name": f"scepline {self.topology.namespace}"},
            )
        except _CONNECT_FAILURES as error:
            raise BrokerUnavailable(f"cannot connect to RabbitMQ: {error!r}") from error
        try:
            # on_return_raises: with mandatory=True an unroutable message raises
            # instead of being handed to a return callback nobody reads.
            channel = await bounded(
                connection.channel(publisher_confirms=True, on_return_raises=True),
                timeout=self.timeout,
                what="open channel",
            )
            self._declared = await bounded(
                declare_topology(channel, self.topology),
                timeout=self.timeout * 6,
                what="declare topology",
            )
            hints = await bounded(
                connection.channel(publisher_confirms=False),
                timeout=self.timeout,
                what="open channel",
            )
        except BrokerUnavailable:
            await connection.close()
            raise
        self._connection, self._channel = connection, channel
        self._hint_channel = hints  # type: ignore[assignment]  # robust (connect_robust)

    async def close(self) -> None:
        if self._connection is None or self._closing:
            return
        self._closing = True
        for _channel, queue, tag in self._consumers:
            with contextlib.suppress(BrokerUnavailable):
                await bounded(queue.cancel(tag), timeout=self.timeout, what="cancel consumer")
        self._consumers.clear()
        # Deliveries in flight may still settle and publish the next step.
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=self._close_grace)
        with contextlib.suppress(BrokerUnavailable):
            await bounded(self._connection.close(), timeout=self.timeout, what="close")
        self._connection = self._channel = self._declared = self._outcome_channel = None
        self._hint_channel = None
        self._closing = False

    async def _publish(
        self, exchange: AbstractExchange, message: Message, routing_key: str, what: str
    ) -> None:
        await bounded(
            exchange.publish(message, routing_key=routing_key, mandatory=True),
            timeout=self.timeout,
            what=what,
        )

    async def publish(self, message: StepMessage) -> None:
        # The hot path (every step of every request): straight to aiormq with
        # the same properties `persistent_message` would set, confirmed and
        # mandatory like every other publish.
        _, channel, _ = self._require()
        await bounded(
            _basic_publish(
                channel,  # type: ignore[arg-type]  # a robust channel (connect_robust)
                message.to_bytes(),
                exchange=self.topology.work_exchange,
                routing_key=message.step.value,
                properties=persistent_properties(),
                mandatory=True,
            ),
            timeout=self.timeout,
            what="publish",
        )

    async def _publish_retry(
        self, step: Step, message: StepMessage, *, delay: float, error: str
    ) -> None:
        _, channel, _ = self._require()
        tier = retry_tier(delay)
        # Never above the tier, so each delay queue only holds TTLs of its own size.
        ttl = min(jittered(delay), float(tier))
        due_at = utc_now() + dt.timedelta(seconds=ttl)
        body = message.next_attempt(error=clip_reason(error), due_at=due_at).to_bytes()
        await self._publish(
            channel.default_exchange,
            persistent_message(body, expiration=ttl),
            self.topology.retry_queue(step, tier),
            "retry",
        )

    async def _publish_dead(
        self, step: Step, incoming: AbstractIncomingMessage, reason: str
    ) -> None:
        _, channel, _ = self._require()
        copy = persistent_message(
            bytes(incoming.body),
            headers=dead_letter_headers(incoming, reason),
            content_type=incoming.content_type or "application/octet-stream",
        )
        await self._publish(
            channel.default_exchange, copy, self.topology.dead_letter_queue(step), "dead-letter"
        )

    async def consume(self, step: Step, consumer: Consumer, *, prefetch: int) -> None:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        connection, _, _ = self._require()

        async def on_message(incoming: AbstractIncomingMessage) -> None:
            await self._handle(step, consumer, incoming)

        async def subscribe() -> tuple[AbstractChannel, AbstractQueue, str]:
            # A channel per consumer: prefetch (basic.qos) is per channel.
            channel = await connection.channel(publisher_confirms=False)
            await channel.set_qos(prefetch_count=prefetch)
            queue = await channel.declare_queue(
                self.topology.work_queue(step),
                durable=True,
                arguments=self.topology.work_queue_arguments(step),
            )
            tag = await queue.consume(on_message, no_ack=False)
            return channel, queue, tag

        self._consumers.append(await bounded(subscribe(), timeout=self.timeout, what="consume"))

    async def _handle(
        self, step: Step, consumer: Consumer, incoming: AbstractIncomingMessage
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        delivery = _AmqpDelivery(self, step, incoming)
        try:
            await consumer(delivery)
            if not delivery.settled:
                log.error("consumer returned without settling; redelivering", step=step.value)
        except Exception:
            log.exception("consumer failed; redelivering", step=step.value)
        finally:
            if task is not None:
                self._inflight.discard(task)
            if not delivery.settled:
                # If the channel is already gone, RabbitMQ requeues it anyway.
                with contextlib.suppress(TimeoutError, *AMQP_FAILURES):
                    await asyncio.wait_for(incoming.nack(requeue=True), self.timeout)

    async def publish_outcome(self, transaction_id: str) -> None:
        try:
            await bounded(
                self._publish_hint(transaction_id.encode()),
                timeout=self.timeout,
                what="publish outcome",
            )
        except BrokerUnavailable as error:
            log.warning("outcome not broadcast", transaction_id=transaction_id, error=str(error))

    async def _publish_hint(self, body: bytes) -> None:
        self._require()
        assert self._hint_channel is not None
        await _basic_publish(
            self._hint_channel,
            body,
            exchange=self.topology.outcomes_exchange,
            routing_key="",
            properties=_OUTCOME_PROPERTIES,
            mandatory=False,  # no subscriber at all is fine
        )

    async def subscribe_outcomes(self, callback: Callable[[str], None]) -> None:
        connection, _, _ = self._require()

        async def on_outcome(incoming: AbstractIncomingMessage) -> None:
            try:
                callback(incoming.body.decode())
            except Exception:
                log.exception("outcome subscriber failed")

        async def subscribe() -> None:
            if self._outcome_channel is None:
                self._outcome_channel = await connection.channel(publisher_confirms=False)
            # Exclusive + auto-delete: it lives exactly as long as this connection;
            # the robust channel declares and binds it again after a reconnection.
            queue = await self._outcome_channel.declare_queue(
                f"{self.topology.outcomes_exchange}.{uuid.uuid4().hex[:16]}",
                exclusive=True,
                auto_delete=True,
            )
            await queue.bind(self.topology.outcomes_exchange)
            await queue.consume(on_outcome, no_ack=True)

        await bounded(subscribe(), timeout=self.timeout, what="subscribe to outcomes")

    async def _admin_channel(self) -> AbstractRobustChannel:
        connection, _, _ = self._require()

        async def open_channel() -> AbstractRobustChannel:
            return await connection.channel(publisher_confirms=False)

        return await bounded(open_channel(), timeout=self.timeout, what="open channel")

    async def _republish(self, step: Step, body: bytes) -> None:
        _, _, declared = self._require()
        await self._publish(declared.work, persistent_message(body), step.value, "replay")

    async def dead_letters(self, step: Step, *, limit: int = 100) -> list[DeadLetter]:
        return await self._admin.dead_letters(step, limit=limit)

    async def replay(self, step: Step, *, ids: Collection[str] | None = None) -> int:
        return await self._admin.take(step, ids, republish=self._republish)

    async def purge(self, step: Step, *, ids: Collection[str] | None = None) -> int:
        if ids is None:
            return await self._admin.purge_all(step)
        return await self._admin.take(step, ids, republish=None)

    async def queue_depths(self) -> dict[str, int]:
        return await self._admin.queue_depths()

"""What only the RabbitMQ broker promises: durability, several processes, the wire
format of dead letters, and bounded waits while RabbitMQ is unreachable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest

from scepline_shared.broker import BrokerUnavailable, create_broker
from scepline_shared.broker.rabbitmq import RabbitMqBroker
from scepline_shared.broker.topology import Topology
from scepline_shared.pipeline import Step
from tests.fixtures.rabbitmq import BrokerHarness, delete_namespace
from tests.shared.broker.helpers import Inbox, dead_letter_policy, eventually, step_message
from tests.shared.broker.proxy import CuttableProxy

pytestmark = pytest.mark.rabbitmq


async def test_queued_messages_survive_the_publisher_going_away(
    rabbitmq_harness: BrokerHarness,
) -> None:
    await rabbitmq_harness.broker.publish(step_message("tx-1"))
    await rabbitmq_harness.broker.publish(step_message("tx-2"))
    await rabbitmq_harness.broker.close()

    inbox = Inbox()
    later = await rabbitmq_harness.another()
    await later.consume(Step.VALIDATE, inbox, prefetch=2)

    got = [(await inbox.next()).message.transaction_id for _ in range(2)]
    assert got == ["tx-1", "tx-2"]


async def test_an_outcome_reaches_every_process(rabbitmq_harness: BrokerHarness) -> None:
    here: list[str] = []
    there: list[str] = []
    other = await rabbitmq_harness.another()
    await rabbitmq_harness.broker.subscribe_outcomes(here.append)
    await other.subscribe_outcomes(there.append)

    await other.publish_outcome("tx-1")

    await eventually(lambda: (here, there), lambda seen: seen == (["tx-1"], ["tx-1"]))


async def test_a_dead_letter_carries_its_reason_in_headers(
    rabbitmq_harness: BrokerHarness,
) -> None:
    broker = rabbitmq_harness.broker
    await broker.consume(Step.SIGN, Inbox(dead_letter_policy("HSM refused")), prefetch=1)
    await broker.publish(step_message("tx-1", step=Step.SIGN))
    [dead] = await eventually(lambda: broker.dead_letters(Step.SIGN), lambda d: len(d) == 1)

    connection = await aio_pika.connect(rabbitmq_harness.url)
    try:
        channel = await connection.channel()
        dlq = Topology(rabbitmq_harness.namespace).dead_letter_queue(Step.SIGN)
        queue = await channel.get_queue(dlq)
        incoming = await queue.get(no_ack=False)
        assert incoming.headers["x-scepline-reason"] == "HSM refused"
        assert "x-scepline-dead-at" in incoming.headers
        assert incoming.message_id == dead.id
        assert incoming.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    finally:
        await connection.close()


async def test_publishing_to_a_missing_queue_is_an_error(rabbitmq_harness: BrokerHarness) -> None:
    connection = await aio_pika.connect(rabbitmq_harness.url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(Topology(rabbitmq_harness.namespace).work_queue(Step.NOTIFY))
    finally:
        await connection.close()

    with pytest.raises(BrokerUnavailable, match="unroutable"):
        await rabbitmq_harness.broker.publish(step_message(step=Step.NOTIFY))


async def test_starting_without_rabbitmq_fails_fast() -> None:
    broker = create_broker("amqp://guest:guest@127.0.0.1:1/", namespace="test-unreachable")
    started = time.monotonic()

    with pytest.raises(BrokerUnavailable):
        await broker.start()
    assert time.monotonic() - started < 5
    assert not broker.healthy


@pytest.fixture
async def proxy(rabbitmq_url: str) -> AsyncIterator[CuttableProxy]:
    target = urlsplit(rabbitmq_url)
    proxy = CuttableProxy(target.hostname or "127.0.0.1", target.port or 5672)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


async def test_an_outage_fails_publishes_quickly_and_recovery_resumes_work(
    rabbitmq_url: str, proxy: CuttableProxy
) -> None:
    target = urlsplit(rabbitmq_url)
    netloc = f"{target.username}:{target.password}@127.0.0.1:{proxy.port}"
    via_proxy = urlunsplit(target._replace(netloc=netloc, query="reconnect_interval=0.2"))
    broker = RabbitMqBroker(via_proxy, namespace=f"test-outage-{time.monotonic_ns()}", timeout=1)
    await broker.start()
    try:
        inbox = Inbox()
        outcomes: list[str] = []
        await broker.consume(Step.VALIDATE, inbox, prefetch=1)
        await broker.subscribe_outcomes(outcomes.append)

        proxy.cut()
        await eventually(lambda: broker.healthy, lambda healthy: not healthy)
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            await broker.publish(step_message("tx-lost"))
        assert time.monotonic() - started < 3, "publish must not wait for the outage to end"
        await broker.publish_outcome("tx-lost")  # best-effort: no exception

        proxy.restore()
        await eventually(lambda: broker.healthy, bool, timeout=10)
        # The robust connection re-opens channels and consumers in the background.
        await eventually(lambda: _published(broker, "tx-after"), bool, timeout=10)
        assert (await inbox.next(timeout=10)).message.transaction_id == "tx-after"
        # Outcomes published before the subscription is back are lost (best-effort;
        # ingress falls back on the store), so keep announcing until one arrives.
        await eventually(lambda: _announce(broker, outcomes), bool, timeout=10)
    finally:
        await broker.close()
        await delete_namespace(rabbitmq_url, broker.topology.namespace)


async def _published(broker: RabbitMqBroker, transaction_id: str) -> bool:
    try:
        await broker.publish(step_message(transaction_id))
    except BrokerUnavailable:
        return False
    return True


async def _announce(broker: RabbitMqBroker, seen: list[str]) -> bool:
    await broker.publish_outcome("tx-after")
    await asyncio.sleep(0.1)
    return "tx-after" in seen

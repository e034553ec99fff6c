"""The broker contract, specified once and run on both brokers.

Every test here runs on the in-process broker (embedded mode) and on real
RabbitMQ, each in a fresh namespace (see tests/fixtures/rabbitmq.py), so a
worker that passes on one behaves the same on the other.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from scepline_shared.broker import Broker, BrokerUnavailable, Delivery, DeliveryAlreadySettled
from scepline_shared.broker.base import DELIVERY_LIMIT
from scepline_shared.messages import DeadLetter, utc_now
from scepline_shared.pipeline import Step
from tests.fixtures.rabbitmq import BrokerHarness
from tests.shared.broker.helpers import Inbox, ack, dead_letter_policy, eventually, step_message


async def parked(broker: Broker, count: int, step: Step = Step.VALIDATE) -> list[DeadLetter]:
    return await eventually(lambda: broker.dead_letters(step), lambda found: len(found) == count)


async def park(broker: Broker, inbox: Inbox, *transaction_ids: str) -> list[DeadLetter]:
    """Publish one message per id and have ``inbox`` dead-letter each, in order."""
    inbox.policy = dead_letter_policy("parked by the test")
    for transaction_id in transaction_ids:
        await broker.publish(step_message(transaction_id))
    return await parked(broker, len(transaction_ids))


async def test_a_published_message_is_delivered_once(broker: Broker) -> None:
    inbox = Inbox()
    await broker.consume(Step.VALIDATE, inbox, prefetch=4)
    await broker.publish(step_message("tx-1"))

    got = await inbox.next()

    assert got.message.transaction_id == "tx-1"
    assert got.message.step is Step.VALIDATE
    assert got.message.attempt == 1
    assert got.delivery.raw == got.message.to_bytes()
    assert await inbox.quiet_for(0.5)
    assert (await broker.queue_depths())["validate.work"] == 0


async def test_a_message_reaches_only_its_steps_consumers(broker: Broker) -> None:
    validate, sign = Inbox(), Inbox()
    await broker.consume(Step.VALIDATE, validate, prefetch=1)
    await broker.consume(Step.SIGN, sign, prefetch=1)

    await broker.publish(step_message("tx-1", step=Step.SIGN))

    assert (await sign.next()).message.step is Step.SIGN
    assert await validate.quiet_for(0.3)


async def test_a_consumer_that_raises_gets_the_message_again(broker: Broker) -> None:
    async def crash_once(delivery: Delivery) -> None:
        if inbox.count == 1:
            raise RuntimeError("worker bug")
        await delivery.ack()

    inbox = Inbox(crash_once)
    await broker.consume(Step.VALIDATE, inbox, prefetch=1)
    await broker.publish(step_message("tx-1"))

    first, second = await inbox.next(), await inbox.next()

    assert second.message.transaction_id == first.message.transaction_id == "tx-1"
    assert second.message.attempt == 1, "a redelivery is not a retry"
    assert await inbox.quiet_for(0.3)


async def test_a_consumer_that_forgets_to_settle_gets_the_message_again(broker: Broker) -> None:
    async def forget_once(delivery: Delivery) -> None:
        if inbox.count > 1:
            await delivery.ack()

    inbox = Inbox(forget_once)
    await broker.consume(Step.VALIDATE, inbox, prefetch=1)
    await broker.publish(step_message("tx-1"))

    await inbox.next()
    assert (await inbox.next()).message.transaction_id == "tx-1"
    assert await inbox.quiet_for(0.3)


async def test_a_message_that_always_crashes_its_consumer_is_parked(broker: Broker) -> None:
    async def crash(delivery: Delivery) -> None:
        raise RuntimeError("poison")

    inbox = Inbox(crash)
    await broker.consume(Step.VALIDATE, inbox, prefetch=1)
    await broker.publish(step_message("tx-poison"))

    [dead] = await eventually(
        lambda: broker.dead_letters(Step.VALIDATE), lambda found: len(found) == 1, timeout=15
    )

    assert inbox.count == DELIVERY_LIMIT + 1
    assert "delivery limit" in dead.reason
    assert dead.message is not None and dead.message.transaction_id == "tx-poison"


async def test_retry_redelivers_after_the_delay_with_the_next_attempt(broker: Broker) -> None:
    async def retry_once(delivery: Delivery) -> None:
        if inbox.count == 1:
            await delivery.retry(delay=0.6, error="Intune throttled")
        else:
            await delivery.ack()

    inbox = Inbox(retry_once)
    await broker.consume(Step.VALIDATE, inbox, prefetch=1)
    await broker.publish(step_message("tx-1"))

    first = await inbox.next()
    waiting = await eventually(broker.queue_depths, lambda d: d["validate.retry"] == 1)
    second = await inbox.next()

    assert waiting["validate.work"] == 0
    assert second.at - first.at >= 0.6
    assert second.message.attempt == 2
    assert second.message.last_error == "Intune throttled"
    # enqueued_at is when it became due again, so queue lag excludes the delay.
    assert second.message.enqueued_at - first.message.enqueued_at >= dt.timedelta(seconds=0.6)
    assert await inbox.quiet_for(0.3)
    assert (await broker.queue_depths())["validate.retry"] == 0


async def test_dead_letter_parks_the_message_with_its_reason(broker: Broker) -> None:
    inbox = Inbox(dead_letter_policy("CSR refused by profile"))
    await broker.consume(Step.VALIDATE, inbox, prefetch=1)
    message = step_message("tx-1", attempt=3)
    before = utc_now()
    await broker.publish(message)

    await inbox.next()
    [dead] = await parked(broker, 1)

    assert dead.reason == "CSR refused by profile"
    assert dead.step is Step.VALIDATE
    assert dead.message == message
    assert dead.raw == message.to_bytes()
    assert before - dt.timedelta(seconds=1) <= dead.dead_at <= utc_now()
    assert dead.id
    assert await inbox.quiet_for(0.3), "a dead letter is not redelivered"
    depths = await broker.queue_depths()
    assert (depths["validate.work"], depths["validate.dlq"]) == (0, 1)


async def test_listing_dead_letters_removes_nothing_and_keeps_order(broker: Broker) -> None:
    inbox = Inbox()
    await broker.consume(Step.VALIDATE, inbox, prefetch=1)
    dead = await park(broker, inbox, "tx-0", "tx-1", "tx-2")

    assert [d.message.transaction_id for d in dead if d.message] == ["tx-0", "tx-1", "tx-2"]
    assert await broker.dead_letters(Step.VALIDATE) == dead
    assert await broker.dead_letters(Step.VALIDATE, limit=2) == dead[:2]
    assert await broker.dead_letters(Step.VALIDATE) == dead
    assert await broker.dead_letters(Step.SIGN) == []


async def test_replay_requeues_every_dead_letter_as_a_first_attempt(broker: Broker) -> None:
    inbox = Inbox()
    await broker.consume(Step.VALIDATE, inbox, prefetch=1)
    inbox.policy = dead_letter_policy("Intune down for too long")
    await broker.publish(step_message("tx-1", attempt=6))
    await broker.publish(step_message("tx-2", attempt=2))
    await parked(broker, 2)
    await inbox.next(), await inbox.next()
    inbox.policy = ack
    before = utc_now()

    assert await broker.replay(Step.VALIDATE) == 2

    replayed = [(await inbox.next()).message for _ in range(2)]
    assert sorted(m.transaction_id for m in replayed) == ["tx-1", "tx-2"]
    assert all(m.attempt == 1 and m.enqueued_at >= before for m in replayed)
    assert await broker.dead_letters(Step.VALIDATE) == []
    assert await broker.replay(Step.VALIDATE) == 0


async def test_replay_by_id_moves_only_the_chosen_dead_letters(broker: Broker) -> None:
    inbox = Inbox()
    await broker.consume(Step.VALIDATE, inbox, prefetch=1)
    dead = await park(broker, inbox, "tx-0", "tx-1", "tx-2")
    for _ in dead:
        await inbox.next()
    inbox.policy = ack

    assert await broker.replay(Step.VALIDATE, ids=[dead[1].id, "no-such-id"]) == 1

    got = await inbox.next()
    assert (got.message.transaction_id, got.message.attempt) == ("tx-1", 1)
    assert await broker.dead_letters(Step.VALIDATE) == [dead[0], dead[2]]
    assert await broker.replay(Step.VALIDATE, ids=["no-such-id"]) == 0
    assert await broker.replay(Step.VALIDATE, ids=[]) == 0
    assert await inbox.quiet_for(0.3)


async def test_purge_deletes_chosen_then_all_dead_letters(broker: Broker) -> None:
    inbox = Inbox()
    await broker.consume(Step.VALIDATE, inbox, prefetch=1)
    dead = await park(broker, inbox, "tx-0", "tx-1", "tx-2")

    assert await broker.purge(Step.VALIDATE, ids=[dead[0].id]) == 1
    assert await broker.dead_letters(Step.VALIDATE) == dead[1:]
    assert await broker.purge(Step.VALIDATE) == 2
    assert await broker.dead_letters(Step.VALIDATE) == []
    assert (await broker.queue_depths())["validate.work"] == 0


async def test_dead_letters_read_meanwhile_by_another_process_are_all_replayed(
    broker_harness: BrokerHarness,
) -> None:
    # Ingress reads the dead letters for its metrics while an operator replays them.
    broker = broker_harness.broker
    inbox = Inbox()
    await broker.consume(Step.VALIDATE, inbox, prefetch=1)
    dead = await park(broker, inbox, *(f"tx-{i}" for i in range(20)))
    for _ in dead:
        await inbox.next()
    inbox.policy = ack
    reader = broker if broker_harness.kind == "memory" else await broker_harness.another()
    seen: list[int] = []
    replayed = asyncio.Event()

    async def keep_reading() -> None:
        while not replayed.is_set():
            seen.append(len(await reader.dead_letters(Step.VALIDATE, limit=1000)))
            await asyncio.sleep(0)  # the in-process broker answers without ever waiting

    reading = asyncio.create_task(keep_reading())
    await eventually(lambda: seen, lambda readings: len(readings) > 0)
    try:
        assert await broker.replay(Step.VALIDATE) == len(dead)
    finally:
        replayed.set()
        await reading
    assert set(seen) <= {0, len(dead)}, "a reading saw part of the letters"
    assert await broker.dead_letters(Step.VALIDATE) == []


async def test_prefetch_bounds_the_deliveries_in_flight(broker: Broker) -> None:
    release = asyncio.Event()
    in_flight = peak = 0

    async def hold(delivery: Delivery) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await release.wait()
        in_flight -= 1
        await delivery.ack()

    inbox = Inbox(hold)
    await broker.consume(Step.VALIDATE, inbox, prefetch=2)
    for number in range(6):
        await broker.publish(step_message(f"tx-{number}"))

    await eventually(lambda: inbox.count, lambda count: count == 2)
    await asyncio.sleep(0.3)
    assert inbox.count == 2
    release.set()
    await eventually(lambda: inbox.count, lambda count: count == 6)
    assert peak == 2


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\xffnot json",
        b'{"schema_version": 2, "transaction_id": "tx-1", "step": "validate"}',
        b'{"transaction_id": "tx-1", "step": "no-such-step"}',
    ],
    ids=["garbage", "newer-schema", "unknown-step"],
)
async def test_an_unreadable_body_is_delivered_as_raw_bytes(
    broker_harness: BrokerHarness, body: bytes
) -> None:
    broker = broker_harness.broker
    inbox = Inbox(dead_letter_policy("unreadable message body"))
    await broker.consume(Step.VALIDATE, inbox, prefetch=1)
    await broker_harness.publish_raw(Step.VALIDATE, body)

    got = await inbox.next()
    [dead] = await parked(broker, 1)

    assert got.delivery.message is None
    assert got.delivery.raw == body
    assert (dead.message, dead.raw, dead.reason) == (None, body, "unreadable message body")
    inbox.policy = ack
    assert await broker.replay(Step.VALIDATE) == 1, "replayed unchanged, for a newer worker"
    assert (await inbox.next()).delivery.raw == body


async def test_retrying_an_unreadable_body_parks_it(broker_harness: BrokerHarness) -> None:
    async def retry(delivery: Delivery) -> None:
        await delivery.retry(delay=0.1, error="cannot parse")

    await broker_harness.broker.consume(Step.VALIDATE, Inbox(retry), prefetch=1)
    await broker_harness.publish_raw(Step.VALIDATE, b"garbage")

    [dead] = await parked(broker_harness.broker, 1)
    assert dead.message is None and "cannot parse" in dead.reason


async def test_a_delivery_is_settled_only_once(broker: Broker) -> None:
    refused: list[BaseException] = []

    async def settle_twice(delivery: Delivery) -> None:
        await delivery.ack()
        try:
            await delivery.dead_letter(reason="again")
        except DeliveryAlreadySettled as error:
            refused.append(error)

    inbox = Inbox(settle_twice)
    await broker.consume(Step.VALIDATE, inbox, prefetch=1)
    await broker.publish(step_message())

    await inbox.next()
    await eventually(lambda: len(refused), lambda count: count == 1)
    assert await broker.dead_letters(Step.VALIDATE) == []


async def test_an_outcome_reaches_every_subscriber(broker: Broker) -> None:
    first: list[str] = []
    second: list[str] = []
    await broker.subscribe_outcomes(first.append)
    await broker.subscribe_outcomes(second.append)

    await broker.publish_outcome("tx-1")
    await broker.publish_outcome("tx-2")

    await eventually(lambda: (first, second), lambda seen: len(seen[1]) == 2)
    assert first == second == ["tx-1", "tx-2"]


async def test_queue_depths_count_waiting_messages_per_step(broker: Broker) -> None:
    for number in range(3):
        await broker.publish(step_message(f"tx-{number}"))
    await broker.publish(step_message("tx-9", step=Step.NOTIFY))

    depths = await eventually(broker.queue_depths, lambda d: d["validate.work"] == 3)

    assert depths == {
        f"{step.value}.{kind}": {"validate.work": 3, "notify.work": 1}.get(
            f"{step.value}.{kind}", 0
        )
        for step in Step
        for kind in ("work", "retry", "dlq")
    }


async def test_a_closed_broker_refuses_to_publish(broker: Broker) -> None:
    assert broker.healthy
    await broker.close()

    assert not broker.healthy
    with pytest.raises(BrokerUnavailable):
        await broker.publish(step_message())
    await broker.publish_outcome("tx-1")  # best-effort: logs, never raises
    await broker.close()  # closing twice is harmless


async def test_close_lets_deliveries_in_flight_settle_and_publish(broker: Broker) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    results: list[object] = []

    async def finish_slowly(delivery: Delivery) -> None:
        started.set()
        await release.wait()
        try:
            await broker.publish(step_message("tx-1", step=Step.SIGN))
            await delivery.ack()
            results.append("settled")
        except Exception as error:
            results.append(error)

    await broker.consume(Step.VALIDATE, Inbox(finish_slowly), prefetch=1)
    await broker.publish(step_message("tx-1"))
    await asyncio.wait_for(started.wait(), 5)

    closing = asyncio.create_task(broker.close())
    await asyncio.sleep(0.2)
    assert not closing.done(), "close waits for the delivery in flight"
    release.set()
    await asyncio.wait_for(closing, 5)

    assert results == ["settled"]

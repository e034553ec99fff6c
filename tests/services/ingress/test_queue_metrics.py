"""scepline_queue_messages: what waits in each step's queues, as an operator's
dashboard and alerts see it. Runs on the in-process broker and on RabbitMQ,
with the state store on SQLite and PostgreSQL."""

from __future__ import annotations

from prometheus_client import REGISTRY

from scepline_ingress.queue_metrics import QUEUE_KINDS, RESOLVED_DEAD_LETTERS, QueueDepthReporter
from scepline_shared.broker import Broker
from scepline_shared.broker.memory import MemoryBroker
from scepline_shared.pipeline import Step
from scepline_shared.store import RequestRepository, RequestState
from tests.shared.broker.helpers import Inbox, dead_letter_policy, eventually, step_message
from tests.shared.store.helpers import record


def gauge(step: Step, queue: str) -> float | None:
    return REGISTRY.get_sample_value(
        "scepline_queue_messages", {"step": step.value, "queue": queue}
    )


async def test_the_gauge_shows_waiting_work_and_dead_letters_per_step(
    broker: Broker, repository: RequestRepository
) -> None:
    # Two requests wait for a validator; one sign message waits for an operator.
    await record(repository, "tx-parked")
    await broker.publish(step_message("tx-waiting-1"))
    await broker.publish(step_message("tx-waiting-2"))
    inbox = Inbox(dead_letter_policy("HSM key refused the request"))
    await broker.consume(Step.SIGN, inbox, prefetch=1)
    await broker.publish(step_message("tx-parked", step=Step.SIGN))
    await eventually(lambda: broker.dead_letters(Step.SIGN), lambda found: len(found) == 1)
    await eventually(broker.queue_depths, lambda depths: depths["validate.work"] == 2)

    assert await QueueDepthReporter(broker, repository, interval=60).report_once()

    assert gauge(Step.VALIDATE, "work") == 2
    assert gauge(Step.SIGN, "dlq") == 1
    assert gauge(Step.SIGN, RESOLVED_DEAD_LETTERS) == 0
    assert gauge(Step.SIGN, "work") == 0
    for kind in QUEUE_KINDS:
        assert gauge(Step.NOTIFY, kind) == 0


async def test_dead_letters_whose_request_finished_anyway_are_counted_apart(
    broker: Broker, repository: RequestRepository
) -> None:
    # The store was down when the step gave up on tx-done, so it was not parked;
    # the sweep had it again and it ended. tx-stuck waits for an operator.
    await record(repository, "tx-stuck")
    await record(repository, "tx-done")
    await repository.transition(
        transaction_id="tx-done",
        from_state=RequestState.RECEIVED,
        to_state=RequestState.REJECTED,
        detail="challenge wrong",
    )
    await broker.consume(Step.VALIDATE, Inbox(dead_letter_policy("store down")), prefetch=1)
    await broker.publish(step_message("tx-stuck"))
    await broker.publish(step_message("tx-done"))
    await eventually(lambda: broker.dead_letters(Step.VALIDATE), lambda found: len(found) == 2)

    assert await QueueDepthReporter(broker, repository, interval=60).report_once()

    assert gauge(Step.VALIDATE, "dlq") == 1
    assert gauge(Step.VALIDATE, RESOLVED_DEAD_LETTERS) == 1
    # Listing them left them where they were.
    assert len(await broker.dead_letters(Step.VALIDATE)) == 2


async def test_a_broker_outage_leaves_the_last_figures_and_raises_nothing(
    repository: RequestRepository,
) -> None:
    broker = MemoryBroker()
    await broker.start()
    await broker.publish(step_message("tx-1"))
    reporter = QueueDepthReporter(broker, repository, interval=60)
    assert await reporter.report_once()
    await broker.close()

    assert not await reporter.report_once()
    assert gauge(Step.VALIDATE, "work") == 1

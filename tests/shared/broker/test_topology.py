"""Broker names, retry tiers and URL dispatch (no server needed)."""

from __future__ import annotations

import pytest

from scepline_shared.broker import BrokerConfigError, MemoryBroker, create_broker
from scepline_shared.broker.base import MAX_RETRY_DELAY, jittered
from scepline_shared.broker.rabbitmq import RabbitMqBroker
from scepline_shared.broker.topology import RETRY_TIERS, Topology, retry_tier
from scepline_shared.pipeline import Step


def test_every_name_is_prefixed_by_the_namespace() -> None:
    topology = Topology("prod-eu")

    assert topology.work_exchange == "prod-eu.work"
    assert topology.outcomes_exchange == "prod-eu.outcomes"
    assert topology.work_queue(Step.SIGN) == "prod-eu.sign"
    assert topology.retry_queue(Step.SIGN, 30) == "prod-eu.sign.retry.30s"
    assert topology.dead_letter_queue(Step.SIGN) == "prod-eu.sign.dlq"
    assert len(topology.queue_names()) == len(Step) * (2 + len(RETRY_TIERS))
    assert all(name.startswith("prod-eu.") for name in topology.queue_names())


def test_queues_are_quorum_and_dead_letter_at_least_once() -> None:
    topology = Topology("ns")
    work = topology.work_queue_arguments(Step.VALIDATE)
    retry = topology.retry_queue_arguments(Step.VALIDATE)

    for arguments in (work, retry, topology.dead_letter_queue_arguments()):
        assert arguments["x-queue-type"] == "quorum"
    for arguments in (work, retry):
        assert arguments["x-dead-letter-strategy"] == "at-least-once"
        assert arguments["x-overflow"] == "reject-publish"
    assert (retry["x-dead-letter-exchange"], retry["x-dead-letter-routing-key"]) == (
        "ns.work",
        "validate",
    )
    assert work["x-dead-letter-routing-key"] == "ns.validate.dlq"


@pytest.mark.parametrize(
    ("delay", "tier"),
    [(0, 1), (0.3, 1), (1, 1), (1.01, 5), (29, 30), (30, 30), (31, 120), (600, 600), (3600, 600)],
)
def test_a_retry_goes_to_the_smallest_tier_that_holds_its_delay(delay: float, tier: int) -> None:
    assert retry_tier(delay) == tier


def test_jitter_never_makes_a_retry_early() -> None:
    for _ in range(200):
        assert 10 <= jittered(10) <= 11
    assert jittered(-1) == 0
    assert jittered(3600) == jittered(600) == MAX_RETRY_DELAY


@pytest.mark.parametrize("namespace", ["", "amq.x", "has space", "é", "-lead"])
def test_an_unusable_namespace_is_refused(namespace: str) -> None:
    with pytest.raises(BrokerConfigError):
        Topology(namespace)
    with pytest.raises(BrokerConfigError):
        MemoryBroker(namespace=namespace)


def test_create_broker_picks_the_implementation_by_url_scheme() -> None:
    assert isinstance(create_broker("memory://"), MemoryBroker)
    rabbit = create_broker("amqps://user:pass@mq.example/scep", namespace="blue")
    assert isinstance(rabbit, RabbitMqBroker) and rabbit.topology.namespace == "blue"
    with pytest.raises(BrokerConfigError, match="redis"):
        create_broker("redis://localhost")

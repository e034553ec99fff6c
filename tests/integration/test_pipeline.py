"""The pipeline contract, end to end, on both deployments: the embedded one
(in-process broker, SQLite) and the production one (RabbitMQ, PostgreSQL),
with ingress and the three workers running their real code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client import REGISTRY

from scepline.admin import purge, replay
from scepline_devtools.scep_client import build_csr
from scepline_ingress.sweeper import Sweeper
from scepline_shared.messages import StepMessage, utc_now
from scepline_shared.pipeline import Step, Transient
from scepline_shared.scep import FailInfo, MessageType, PkiStatus, issuer_and_subject
from scepline_shared.settings import Settings
from scepline_shared.store.models import RequestState
from scepline_validator.challenge import (
    StaticChallengeValidator,
    ValidationOutcome,
    ValidationRequest,
)
from tests.fixtures.scepline import (
    CHALLENGE,
    DEPLOYMENTS,
    RunningScepline,
    lab_deployment,
    running,
)
from tests.support.pki import name, requester


class FlakyChallenge:
    """An external challenge service that can be taken down (as Intune can)."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0
        self._real = StaticChallengeValidator(CHALLENGE)

    async def validate(self, request: ValidationRequest) -> ValidationOutcome:
        self.calls += 1
        if self.down:
            raise Transient("challenge service unavailable")
        return await self._real.validate(request)


@pytest.fixture(params=DEPLOYMENTS)
async def deployment_settings(request: pytest.FixtureRequest) -> AsyncIterator[Settings]:
    async with lab_deployment(
        request,
        sync_wait_seconds=10,
        retry_max_attempts=2,
        retry_base_delay_seconds=0.05,
    ) as settings:
        yield settings


async def enrol(product: RunningScepline, label: str, transaction_id: str):  # type: ignore[no-untyped-def]
    who = requester(label)
    csr = build_csr(who.key, name(label), challenge=CHALLENGE)
    return await product.client.enrol(csr, who, transaction_id=transaction_id)


async def poll(product: RunningScepline, label: str, transaction_id: str):  # type: ignore[no-untyped-def]
    ca = product.embedded.material.ca.certificate
    return await product.client.exchange(
        MessageType.CERT_POLL,
        issuer_and_subject(ca.subject, name(label)),
        requester(label),
        transaction_id=transaction_id,
    )


async def poll_until_final(product: RunningScepline, label: str, transaction_id: str):  # type: ignore[no-untyped-def]
    for _ in range(200):
        rep = await poll(product, label, transaction_id)
        if rep.status is not PkiStatus.PENDING:
            return rep
        await asyncio.sleep(0.05)
    raise AssertionError(f"{transaction_id} still PENDING")


async def test_enrolment_is_answered_in_the_same_request(deployment_settings: Settings):
    async with running(deployment_settings) as product:
        rep = await enrol(product, "sync", "tx-sync")
        assert rep.status is PkiStatus.SUCCESS
        request = await product.embedded.repository.get("tx-sync")
        assert request is not None and request.state == RequestState.ISSUED


async def test_pending_request_completes_after_polling(deployment_settings: Settings):
    no_wait = deployment_settings.model_copy(update={"sync_wait_seconds": 0})
    async with running(no_wait) as product:
        first = await enrol(product, "pending", "tx-pending")
        assert first.status is PkiStatus.PENDING
        final = await poll_until_final(product, "pending", "tx-pending")
        assert final.status is PkiStatus.SUCCESS
        assert final.certificates[0].subject == name("pending")


async def test_a_burst_issues_exactly_one_certificate_per_transaction(
    deployment_settings: Settings,
):
    async with running(deployment_settings) as product:
        labels = [f"burst-{i}" for i in range(24)]
        # Every device also retransmits once, concurrently with its first try.
        replies = await asyncio.gather(
            *(enrol(product, label, f"tx-{label}") for label in labels),
            *(enrol(product, label, f"tx-{label}") for label in labels),
        )
        assert all(rep.status is PkiStatus.SUCCESS for rep in replies)
        by_transaction: dict[str, set[int]] = {}
        for label, rep in zip(labels * 2, replies, strict=True):
            by_transaction.setdefault(label, set()).add(rep.certificates[0].serial_number)
        assert all(len(serials) == 1 for serials in by_transaction.values())
        for label in labels:
            request = await product.embedded.repository.get(f"tx-{label}")
            assert request is not None and request.cert_serial is not None
            assert await product.embedded.repository.get_certificate(request.cert_serial)


async def test_request_recorded_while_the_broker_was_down_is_swept_into_the_pipeline(
    deployment_settings: Settings,
):
    async with running(deployment_settings) as product:
        repository = product.embedded.repository
        who = requester("swept")
        csr = build_csr(who.key, name("swept"), challenge=CHALLENGE)
        # What ingress leaves behind when its publish failed: recorded, never queued.
        await repository.record_request(
            transaction_id="tx-swept",
            signer_key_id="ab" * 32,
            message_type=int(MessageType.PKCS_REQ),
            csr_der=csr.public_bytes(Encoding.DER),
            signer_cert_der=who.certificate.public_bytes(Encoding.DER),
            subject="CN=swept",
        )
        sweeper = Sweeper(
            repository=repository, pipeline=_pipeline(product), stale_after=timedelta(0)
        )
        swept_before = _swept(Step.VALIDATE)
        assert await sweeper.sweep_once() >= 1
        assert _swept(Step.VALIDATE) >= swept_before + 1  # operators see the sweep at work
        for _ in range(200):
            request = await repository.get("tx-swept")
            if request is not None and request.is_terminal:
                break
            await asyncio.sleep(0.05)
        assert request is not None and request.state == RequestState.ISSUED


async def test_outage_dead_letters_then_replay_completes_every_request(
    deployment_settings: Settings,
):
    provider = FlakyChallenge()
    short = deployment_settings.model_copy(update={"sync_wait_seconds": 1})
    async with running(short, challenge=provider) as product:
        provider.down = True
        labels = [f"outage-{i}" for i in range(5)]
        replies = await asyncio.gather(*(enrol(product, lb, f"tx-{lb}") for lb in labels))
        assert all(rep.status is PkiStatus.PENDING for rep in replies)
        broker, repository = product.embedded.broker, product.embedded.repository
        letters = await _wait_for_dead_letters(broker, Step.VALIDATE, len(labels))
        assert {letter.message.transaction_id for letter in letters if letter.message} == {
            f"tx-{lb}" for lb in labels
        }
        assert all("challenge service unavailable" in letter.reason for letter in letters)
        parked = await repository.parked()
        assert {r.transaction_id for r in parked} == {f"tx-{lb}" for lb in labels}

        provider.down = False
        done = await replay(broker, repository, Step.VALIDATE, ids=None)
        assert (done.replayed, done.dropped) == (len(labels), 0)
        for label in labels:
            final = await poll_until_final(product, label, f"tx-{label}")
            assert final.status is PkiStatus.SUCCESS
        assert await broker.dead_letters(Step.VALIDATE) == []
        assert await repository.parked() == []


async def test_purged_dead_letter_fails_the_request_instead_of_leaving_it_pending(
    deployment_settings: Settings,
):
    provider = FlakyChallenge()
    short = deployment_settings.model_copy(update={"sync_wait_seconds": 1})
    async with running(short, challenge=provider) as product:
        provider.down = True
        assert (await enrol(product, "given-up", "tx-given-up")).status is PkiStatus.PENDING
        broker, repository = product.embedded.broker, product.embedded.repository
        await _wait_for_dead_letters(broker, Step.VALIDATE, 1)
        assert await purge(broker, repository, Step.VALIDATE, ids=None) == 1
        final = await poll(product, "given-up", "tx-given-up")
        assert final.status is PkiStatus.FAILURE
        assert final.fail_info is FailInfo.BAD_REQUEST


async def test_unreadable_and_unknown_messages_are_dead_lettered_not_crashing_workers(
    deployment_settings: Settings,
):
    async with running(deployment_settings) as product:
        broker = product.embedded.broker
        await broker.publish(
            StepMessage(transaction_id="no-such-request", step=Step.SIGN, enqueued_at=utc_now())
        )
        letters = await _wait_for_dead_letters(broker, Step.SIGN, 1)
        assert "no request with transaction id" in letters[0].reason
        # The workers are still alive: a real enrolment still goes through.
        assert (await enrol(product, "after", "tx-after")).status is PkiStatus.SUCCESS


def _swept(step: Step) -> float:
    value = REGISTRY.get_sample_value("scepline_swept_requests_total", {"step": step.value})
    return value or 0.0


def _pipeline(product: RunningScepline):  # type: ignore[no-untyped-def]
    from scepline_ingress.broker_pipeline import BrokerPipeline

    return BrokerPipeline(broker=product.embedded.broker)


async def _wait_for_dead_letters(broker, step: Step, count: int):  # type: ignore[no-untyped-def]
    for _ in range(200):
        letters = await broker.dead_letters(step)
        if len(letters) >= count:
            return letters
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} dead letters in {step.value}")

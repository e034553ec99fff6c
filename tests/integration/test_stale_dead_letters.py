"""Dead letters whose request was finished anyway need no operator.

When PostgreSQL goes away for a while, a step gives up on the messages it
cannot process, and parking their requests in the store fails as well. The
sweep, which skips only parked requests, later re-queues them and they
complete; their letters stay in the dead-letter queue. Such a letter is
*resolved*: `scepline dlq` shows it as such and replay drops it instead of
running a step again, and `scepline_queue_messages{queue="dlq"}`, which
operators alert on, does not count it (`queue="dlq_resolved"` does).

A real outage: the product reaches PostgreSQL through a TCP proxy that the test
cuts. On RabbitMQ, and on the in-process broker of `scepline up`, whose dead
letters live in that process (its `dlq` commands work on parked requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from scepline_devtools.scep_client import build_csr
from scepline_shared.messages import StepMessage, utc_now
from scepline_shared.pipeline import Step, Transient
from scepline_shared.scep import MessageType, PkiStatus
from scepline_shared.settings import Settings
from scepline_shared.store.models import RequestState
from scepline_validator.challenge import (
    StaticChallengeValidator,
    ValidationOutcome,
    ValidationRequest,
)
from tests.fixtures.postgres import fresh_postgres_database
from tests.fixtures.rabbitmq import delete_namespace
from tests.fixtures.scepline import CHALLENGE, RunningScepline, data_dir_with_ca, running
from tests.shared.broker.helpers import eventually
from tests.shared.broker.proxy import CuttableProxy
from tests.support.commands import run_scepline
from tests.support.pki import name, requester

pytestmark = pytest.mark.postgres


class ChallengeService:
    """The static challenge behind a switch, remembering whom it validated."""

    def __init__(self) -> None:
        self.down = False
        self.validated: list[str] = []
        self._real = StaticChallengeValidator(CHALLENGE)

    async def validate(self, request: ValidationRequest) -> ValidationOutcome:
        if self.down:
            raise Transient("challenge service unavailable")
        self.validated.append(request.transaction_id)
        return await self._real.validate(request)


@dataclass
class Deployment:
    settings: Settings
    database: CuttableProxy  # PostgreSQL, as the product reaches it

    @property
    def env(self) -> dict[str, str]:
        """What an operator's `scepline` command needs to reach the same deployment."""
        return {
            "SCEPLINE_DATA_DIR": str(self.settings.data_dir),
            "SCEPLINE_DATABASE_URL": str(self.settings.database_url),
            "SCEPLINE_BROKER_URL": self.settings.broker_url,
            "SCEPLINE_BROKER_NAMESPACE": self.settings.broker_namespace,
            "SCEPLINE_STATIC_CHALLENGE": CHALLENGE,
        }


@contextlib.asynccontextmanager
async def behind_a_proxy(broker: str, request: pytest.FixtureRequest) -> AsyncIterator[Deployment]:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    lab_ca_dir: Path = request.getfixturevalue("lab_ca_dir")
    admin_dsn: str = request.getfixturevalue("postgres_admin_dsn")
    broker_url, namespace = "memory://", "scepline"
    if broker == "rabbitmq":
        broker_url, namespace = request.getfixturevalue("rabbitmq_url"), f"test-{uuid.uuid4().hex}"
    async with fresh_postgres_database(admin_dsn) as database_url:
        parts = urlsplit(database_url)
        proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
        await proxy.start()
        through_proxy = parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}")
        settings = Settings(
            data_dir=data_dir_with_ca(tmp_path, lab_ca_dir),
            static_challenge=CHALLENGE,
            database_url=urlunsplit(through_proxy),
            broker_url=broker_url,
            broker_namespace=namespace,
            sync_wait_seconds=1,
            retry_max_attempts=2,
            retry_base_delay_seconds=0.05,
            sweep_stale_after_seconds=1,
            sweep_interval_seconds=0.2,
            queue_metrics_interval_seconds=0.2,
        )
        try:
            yield Deployment(settings, proxy)
        finally:
            await proxy.close()
            if broker == "rabbitmq":
                await delete_namespace(broker_url, namespace)


_PARK_FAILED = "could not record the dead letter in the store"


async def as_operator(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    """`scepline ARGS`, run while this process goes on serving (and proxying)."""
    return await asyncio.to_thread(run_scepline, deployment.env, *args)


def gauge(queue: str) -> float | None:
    return REGISTRY.get_sample_value(
        "scepline_queue_messages", {"step": Step.VALIDATE.value, "queue": queue}
    )


def alert_figures() -> tuple[float | None, float | None]:
    """(waiting for an operator, resolved) in the validate step's dead-letter queue."""
    return gauge("dlq"), gauge("dlq_resolved")


async def a_waiting_and_a_resolved_dead_letter(
    product: RunningScepline, database: CuttableProxy, challenge: ChallengeService
) -> None:
    """Leave two letters in the validate DLQ: tx-waiting's (parked, for an
    operator) and tx-stale's (not parked, because the database was down; its
    request then finished through the sweep)."""
    broker, repository = product.embedded.broker, product.embedded.repository
    challenge.down = True
    who = requester("waiting")
    csr = build_csr(who.key, name("waiting"), challenge=CHALLENGE)
    reply = await product.client.enrol(csr, who, transaction_id="tx-waiting")
    assert reply.status is PkiStatus.PENDING
    await eventually(repository.parked, lambda parked: len(parked) == 1)
    challenge.down = False

    # A request recorded and queued by ingress just before PostgreSQL went away.
    who = requester("stale")
    csr = build_csr(who.key, name("stale"), challenge=CHALLENGE)
    await repository.record_request(
        transaction_id="tx-stale",
        signer_key_id="ab" * 32,
        message_type=int(MessageType.PKCS_REQ),
        csr_der=csr.public_bytes(Encoding.DER),
        signer_cert_der=who.certificate.public_bytes(Encoding.DER),
        subject="CN=stale",
        queued=True,
    )
    with capture_logs() as logs:
        database.cut()
        await broker.publish(
            StepMessage(transaction_id="tx-stale", step=Step.VALIDATE, enqueued_at=utc_now())
        )
        # Down long enough for the step to give up, and for parking to fail too.
        await eventually(lambda: [e["event"] for e in logs], lambda events: _PARK_FAILED in events)
        database.restore()
    assert len(await broker.dead_letters(Step.VALIDATE)) == 2

    stale = await eventually(
        lambda: repository.get("tx-stale"),
        lambda request: request is not None and request.state is RequestState.ISSUED,
        timeout=20,
    )
    assert stale.parked_at is None
    assert challenge.validated == ["tx-stale"]
    assert len(await broker.dead_letters(Step.VALIDATE)) == 2


@pytest.mark.parametrize("broker", ["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
async def test_the_alert_counts_only_dead_letters_that_need_an_operator(
    broker: str, request: pytest.FixtureRequest
) -> None:
    challenge = ChallengeService()
    async with (
        behind_a_proxy(broker, request) as deployment,
        running(deployment.settings, challenge=challenge) as product,
    ):
        await a_waiting_and_a_resolved_dead_letter(product, deployment.database, challenge)

        # Ingress's own report, as Prometheus scrapes it.
        await eventually(alert_figures, lambda figures: figures == (1, 1))


@pytest.mark.rabbitmq
async def test_dlq_commands_show_a_resolved_letter_and_replay_drops_it(
    request: pytest.FixtureRequest,
) -> None:
    challenge = ChallengeService()
    async with (
        behind_a_proxy("rabbitmq", request) as deployment,
        running(deployment.settings, challenge=challenge) as product,
    ):
        await a_waiting_and_a_resolved_dead_letter(product, deployment.database, challenge)
        broker, repository = product.embedded.broker, product.embedded.repository
        letters = {
            letter.message.transaction_id: letter.id
            for letter in await broker.dead_letters(Step.VALIDATE)
            if letter.message is not None
        }

        listed = await as_operator(deployment, "dlq", "list", "--step", "validate")
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        assert "2 dead letter(s), 1 resolved" in lines[0]
        (stale_line,) = [line for line in lines if letters["tx-stale"] in line]
        (waiting_line,) = [line for line in lines if letters["tx-waiting"] in line]
        assert "resolved" in stale_line
        assert "waiting" in waiting_line

        shown = await as_operator(
            deployment, "dlq", "show", "--step", "validate", letters["tx-stale"]
        )
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["resolved"] is True

        history_before = await repository.history("tx-stale")
        replayed = await as_operator(deployment, "dlq", "replay", "--step", "validate")
        assert replayed.returncode == 0, replayed.stderr
        assert "validate: replayed 1, dropped 1 resolved" in replayed.stdout

        waiting = await eventually(
            lambda: repository.get("tx-waiting"),
            lambda found: found is not None and found.state is RequestState.ISSUED,
            timeout=20,
        )
        assert waiting.parked_at is None
        assert await broker.dead_letters(Step.VALIDATE) == []
        # Nothing ran again for the finished request: not a step, not an unpark.
        assert await repository.history("tx-stale") == history_before
        assert challenge.validated == ["tx-stale", "tx-waiting"]
        await eventually(alert_figures, lambda figures: figures == (0, 0))


async def test_in_process_dead_letters_stop_alerting_once_the_operator_finished_them(
    request: pytest.FixtureRequest,
) -> None:
    """`scepline up`: the operator's command cannot reach the in-process dead
    letters, only the parked requests. Once a replayed request has completed,
    its letter (kept by the running process) no longer counts as waiting."""
    challenge = ChallengeService()
    async with (
        behind_a_proxy("memory", request) as deployment,
        running(deployment.settings, challenge=challenge) as product,
    ):
        await a_waiting_and_a_resolved_dead_letter(product, deployment.database, challenge)

        listed = await as_operator(deployment, "dlq", "list", "--step", "validate")
        assert listed.returncode == 0, listed.stderr
        assert "1 parked request(s)" in listed.stdout
        assert "tx-waiting" in listed.stdout and "tx-stale" not in listed.stdout

        replayed = await as_operator(deployment, "dlq", "replay", "--step", "validate")
        assert replayed.returncode == 0, replayed.stderr
        await eventually(
            lambda: product.embedded.repository.get("tx-waiting"),
            lambda found: found is not None and found.state is RequestState.ISSUED,
            timeout=20,
        )
        assert challenge.validated == ["tx-stale", "tx-waiting"]
        await eventually(alert_figures, lambda figures: figures == (0, 2))


@pytest.mark.rabbitmq
async def test_purging_a_resolved_letter_leaves_its_finished_request_alone(
    request: pytest.FixtureRequest,
) -> None:
    challenge = ChallengeService()
    async with (
        behind_a_proxy("rabbitmq", request) as deployment,
        running(deployment.settings, challenge=challenge) as product,
    ):
        await a_waiting_and_a_resolved_dead_letter(product, deployment.database, challenge)
        broker, repository = product.embedded.broker, product.embedded.repository
        (stale_letter,) = [
            letter
            for letter in await broker.dead_letters(Step.VALIDATE)
            if letter.message is not None and letter.message.transaction_id == "tx-stale"
        ]
        history_before = await repository.history("tx-stale")

        purged = await as_operator(
            deployment, "dlq", "purge", "--step", "validate", stale_letter.id
        )

        assert purged.returncode == 0, purged.stderr
        assert "validate: purged 1 (1 resolved" in purged.stdout
        assert await repository.history("tx-stale") == history_before
        stale = await repository.get("tx-stale")
        assert stale is not None and stale.state is RequestState.ISSUED
        assert stale.cert_serial is not None
        certificate = await repository.get_certificate(stale.cert_serial)
        assert certificate is not None and certificate.revoked_at is None
        (left,) = await broker.dead_letters(Step.VALIDATE)
        assert left.message is not None and left.message.transaction_id == "tx-waiting"

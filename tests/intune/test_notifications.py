"""Success and failure notifications through the whole product, on both deployments:
withholding, retries, dead letters and replay (``docs/specs/intune-api.md``, "Notifications";
"Minimum test matrix" rows 5-7)."""

from __future__ import annotations

import asyncio

import pytest
from cryptography import x509

import scepline_notifier.main as notifier
from scepline.admin import dead_letters, purge, replay
from scepline.runtime import intune_client
from scepline_devtools.intune_sim import Route
from scepline_shared.intune import MAX_ERROR_DESCRIPTION
from scepline_shared.pipeline import Step
from scepline_shared.scep import FailInfo, PkiStatus
from scepline_shared.settings import Settings
from scepline_shared.store.database import create_engine_for
from scepline_shared.store.models import NotifyState, RequestState
from tests.fixtures.scepline import RunningScepline, running
from tests.intune.support import (
    enrol,
    eventually,
    mint,
    poll_until_final,
    success_notifications,
    wait_for_dead_letters,
)
from tests.intune_sim.fixtures import IntuneSim
from tests.support.pki import name, requester

# failInfo badRequest (2) with the customer bit, as EJBCA reports it.
HRESULT_BAD_REQUEST = 0x20000102


async def notify_dead(product: RunningScepline, transaction_id: str) -> bool:
    request = await product.embedded.repository.get(transaction_id)
    return request is not None and request.notify_state is NotifyState.DEAD


def failure_notifications(sim: IntuneSim, transaction_id: str) -> list[dict[str, object]]:
    return [
        n.fields
        for n in sim.admin.notifications("failure")
        if n.fields["transactionId"] == transaction_id
    ]


async def test_a_refused_success_notification_withholds_the_certificate(
    deployment_settings: Settings, intune_sim: IntuneSim
):
    # Matrix 5 (non-Success code): "must not issue" — FAILURE, and Intune is told.
    intune_sim.admin.add_fault(Route.SUCCESS_NOTIFICATION, "code", code="SimInventedUnknownCode")
    async with running(deployment_settings) as product:
        rep = await enrol(product, "held", "tx-held", mint(intune_sim, "held"))
        repository = product.embedded.repository
        request = await repository.get("tx-held")
        assert request is not None and request.cert_serial is not None
        certificate = await repository.get_certificate(request.cert_serial)
    assert rep.status is PkiStatus.FAILURE
    assert rep.fail_info is FailInfo.BAD_REQUEST
    assert request.state is RequestState.FAILED
    assert request.provider_code == "SimInventedUnknownCode"
    assert "SimInventedUnknownCode" in (request.fail_reason or "")
    assert certificate is not None and certificate.is_revoked  # signed, never handed out
    [failure] = failure_notifications(intune_sim, "tx-held")
    assert failure["hResult"] == HRESULT_BAD_REQUEST
    assert "SimInventedUnknownCode" in str(failure["errorDescription"])
    assert request.notify_state is NotifyState.SENT


async def test_a_failing_success_notification_keeps_the_certificate_back(
    deployment_settings: Settings, intune_sim: IntuneSim
):
    # Matrix 5 (HTTP 500): retried, dead-lettered, never released meanwhile.
    intune_sim.admin.add_fault(Route.SUCCESS_NOTIFICATION, "internal_error", count=10_000)
    short = deployment_settings.model_copy(
        update={"sync_wait_seconds": 1, "intune_retry_budget_seconds": 0.5}
    )
    async with running(short) as product:
        rep = await enrol(product, "five", "tx-five", mint(intune_sim, "five"))
        assert rep.status is PkiStatus.PENDING
        await wait_for_dead_letters(product.embedded.broker, Step.NOTIFY, 1)
        await eventually(lambda: notify_dead(product, "tx-five"), "notify_state DEAD")
        request = await product.embedded.repository.get("tx-five")
        polled = await product.client.poll(requester("five"), "tx-five", name("five"))
    assert polled.status is PkiStatus.PENDING
    assert request is not None and request.state is RequestState.SIGNED
    assert request.notify_state is NotifyState.DEAD
    assert request.parked_at is not None
    attempts = intune_sim.admin.calls(Route.SUCCESS_NOTIFICATION)
    assert attempts and all(c.status == 500 for c in attempts)


async def test_an_issuance_error_after_validation_sends_a_failure_notification(
    deployment_settings: Settings, intune_sim: IntuneSim
):
    # Matrix 6: Intune validated, the signer refused (empty subject, no SAN).
    challenge = mint(intune_sim, "nameless", subject=None)
    async with running(deployment_settings) as product:
        rep = await enrol(product, "nameless", "tx-nameless", challenge, subject=x509.Name([]))
        repository = product.embedded.repository

        async def notified() -> bool:
            request = await repository.get("tx-nameless")
            return request is not None and request.notify_state is not NotifyState.NONE

        await eventually(notified, "the failure notification")
        request = await repository.get("tx-nameless")
    assert rep.status is PkiStatus.FAILURE
    assert request is not None and request.state is RequestState.FAILED
    assert request.notify_state is NotifyState.SENT
    [failure] = failure_notifications(intune_sim, "tx-nameless")
    assert isinstance(failure["hResult"], int)
    assert failure["hResult"] == HRESULT_BAD_REQUEST
    description = str(failure["errorDescription"])
    assert 0 < len(description) <= MAX_ERROR_DESCRIPTION
    assert "empty subject" in description
    assert success_notifications(intune_sim, "tx-nameless") == []


async def test_a_failure_notification_that_fails_is_only_recorded(
    deployment_settings: Settings, intune_sim: IntuneSim
):
    intune_sim.admin.add_fault(Route.FAILURE_NOTIFICATION, "unavailable", count=100, retry_after=0)
    settings = deployment_settings.model_copy(update={"intune_retry_budget_seconds": 0.5})
    async with running(settings) as product:
        challenge = mint(intune_sim, "nameless-2", subject=None)
        rep = await enrol(product, "nameless-2", "tx-nl2", challenge, subject=x509.Name([]))
        repository = product.embedded.repository

        async def dead() -> bool:
            request = await repository.get("tx-nl2")
            return request is not None and request.notify_state is NotifyState.DEAD

        await eventually(dead, "notify_state DEAD")
        assert await product.embedded.broker.dead_letters(Step.NOTIFY) == []
        assert await repository.parked() == []
    assert rep.status is PkiStatus.FAILURE  # the device had its answer all along


@pytest.mark.parametrize("fault", ["throttle", "unavailable"])
async def test_throttling_or_5xx_on_validation_is_retried_then_fails_closed(
    deployment_settings: Settings, intune_sim: IntuneSim, fault: str
):
    # Matrix 7: a passing 429/503 is absorbed; a lasting one, past the request's
    # deadline, ends in a FAILURE instead of a certificate.
    intune_sim.admin.add_fault(Route.VALIDATE_REQUEST, fault, retry_after=1)
    async with running(deployment_settings) as product:
        passing = await enrol(product, "pass", "tx-pass", mint(intune_sim, "pass"))
    assert passing.status is PkiStatus.SUCCESS

    intune_sim.admin.add_fault(Route.VALIDATE_REQUEST, fault, count=10_000, retry_after=0)
    strict = deployment_settings.model_copy(
        update={"intune_validation_deadline_seconds": 0.1, "intune_retry_budget_seconds": 1.5}
    )
    async with running(strict) as product:
        rep = await enrol(product, "closed", "tx-closed", mint(intune_sim, "closed"))
        request = await product.embedded.repository.get("tx-closed")
    assert rep.status is PkiStatus.FAILURE
    assert request is not None and request.state is RequestState.REJECTED
    assert (request.fail_reason or "").startswith("Intune unavailable")
    tries = [c for c in intune_sim.admin.calls(Route.VALIDATE_REQUEST) if c.fault]
    # The passing fault, then one bounded round (at most 3 tries in 1.5 s); the
    # request was past its deadline when the round gave up, so no worker retry.
    assert 1 + 2 <= len(tries) <= 1 + 3


async def test_a_notifier_outage_parks_devices_and_replay_completes_each_once(
    deployment_settings: Settings, intune_sim: IntuneSim
):
    # Intune's successNotification down for a while: devices wait PENDING, the
    # notify DLQ fills; after the outage a replay issues exactly one certificate each.
    intune_sim.admin.add_fault(
        Route.SUCCESS_NOTIFICATION, "unavailable", count=100_000, retry_after=0
    )
    settings = deployment_settings.model_copy(
        update={"sync_wait_seconds": 1, "intune_retry_budget_seconds": 0.5}
    )
    labels = [f"outage-{i}" for i in range(4)]
    async with running(settings) as product:
        replies = await asyncio.gather(
            *(enrol(product, lb, f"tx-{lb}", mint(intune_sim, lb)) for lb in labels)
        )
        assert all(rep.status is PkiStatus.PENDING for rep in replies)
        broker, repository = product.embedded.broker, product.embedded.repository
        letters = await wait_for_dead_letters(broker, Step.NOTIFY, len(labels))
        assert {d.message.transaction_id for d in letters if d.message} == {
            f"tx-{lb}" for lb in labels
        }
        for label in labels:
            transaction_id = f"tx-{label}"

            async def dead(transaction_id: str = transaction_id) -> bool:
                return await notify_dead(product, transaction_id)

            # The worker dead-letters first, then records it in the store.
            await eventually(dead, "notify_state DEAD")
            request = await repository.get(f"tx-{label}")
            assert request is not None and request.state is RequestState.SIGNED

        intune_sim.admin.clear_faults()
        done = await replay(broker, repository, Step.NOTIFY, ids=None)
        assert (done.replayed, done.dropped) == (len(labels), 0)
        for label in labels:
            final = await poll_until_final(product, label, f"tx-{label}")
            assert final.status is PkiStatus.SUCCESS
            request = await repository.get(f"tx-{label}")
            assert request is not None
            assert request.state is RequestState.ISSUED
            assert request.notify_state is NotifyState.SENT
            assert format(final.certificates[0].serial_number, "x") == request.cert_serial
            [sent] = success_notifications(intune_sim, f"tx-{label}")
            assert sent.fields["certificateSerialNumber"] == request.cert_serial
        assert await broker.dead_letters(Step.NOTIFY) == []
        assert await repository.parked() == []


@pytest.mark.parametrize("replayed_by", ["broker", "command"])
async def test_release_before_notify_hands_out_the_certificate_first(
    deployment_settings: Settings, intune_sim: IntuneSim, replayed_by: str
):
    # The notification dead-lettered after the release is sent once replayed,
    # through the broker or by `scepline dlq replay --step notify` as its own
    # process would run it. (In-process broker: the request is final, so there
    # is no step for the running process's sweep; the command sends it itself.)
    intune_sim.admin.add_fault(
        Route.SUCCESS_NOTIFICATION, "unavailable", count=100_000, retry_after=0
    )
    eager = deployment_settings.model_copy(
        update={
            "release_before_notify": True,
            "sync_wait_seconds": 5,
            "intune_retry_budget_seconds": 0.5,
        }
    )
    async with running(eager) as product:
        rep = await enrol(product, "eager", "tx-eager", mint(intune_sim, "eager"))
        assert rep.status is PkiStatus.SUCCESS
        broker, repository = product.embedded.broker, product.embedded.repository
        await wait_for_dead_letters(broker, Step.NOTIFY, 1)
        await eventually(lambda: notify_dead(product, "tx-eager"), "notify_state DEAD")
        request = await repository.get("tx-eager")
        assert request is not None
        assert (request.state, request.notify_state) == (RequestState.ISSUED, NotifyState.DEAD)
        intune_sim.admin.clear_faults()
        if replayed_by == "broker":
            await replay(broker, repository, Step.NOTIFY, ids=None)
        else:
            assert await dead_letters(eager, "replay", [Step.NOTIFY], None) == 0

        async def sent() -> bool:
            request = await repository.get("tx-eager")
            return request is not None and request.notify_state is NotifyState.SENT

        await eventually(sent, "the late success notification")
        parked = await repository.parked()
    assert parked == []
    assert len(success_notifications(intune_sim, "tx-eager")) == 1


async def test_purging_a_parked_notification_revokes_the_unreleased_certificate_and_tells_intune(
    deployment_settings: Settings, intune_sim: IntuneSim
):
    # An operator gives up on a request whose success notification never got
    # through: the device gets FAILURE instead of PENDING forever, the
    # certificate it never received is revoked, and Intune (reachable again)
    # hears that the request it validated failed.
    intune_sim.admin.add_fault(
        Route.SUCCESS_NOTIFICATION, "unavailable", count=100_000, retry_after=0
    )
    settings = deployment_settings.model_copy(
        update={"sync_wait_seconds": 1, "intune_retry_budget_seconds": 0.5}
    )
    async with running(settings) as product, intune_client(settings) as intune:
        rep = await enrol(product, "abandoned", "tx-abandoned", mint(intune_sim, "abandoned"))
        assert rep.status is PkiStatus.PENDING
        broker, repository = product.embedded.broker, product.embedded.repository
        await wait_for_dead_letters(broker, Step.NOTIFY, 1)

        async def dead() -> bool:
            return await notify_dead(product, "tx-abandoned")

        await eventually(dead, "notify_state DEAD")
        intune_sim.admin.clear_faults()

        reporter = notifier.build_failure_reporter(repository, intune)
        assert await purge(broker, repository, Step.NOTIFY, ids=None, report_failure=reporter) == 1
        final = await poll_until_final(product, "abandoned", "tx-abandoned")
        request = await repository.get("tx-abandoned")
        assert request is not None and request.cert_serial is not None
        certificate = await repository.get_certificate(request.cert_serial)
        assert await broker.dead_letters(Step.NOTIFY) == []
    assert final.status is PkiStatus.FAILURE
    assert final.fail_info is FailInfo.BAD_REQUEST
    assert request.state is RequestState.FAILED
    assert request.notify_state is NotifyState.SENT
    assert certificate is not None and certificate.revoked_at is not None
    [failure] = failure_notifications(intune_sim, "tx-abandoned")
    assert failure["hResult"] == HRESULT_BAD_REQUEST


class RevocationFault:
    """Makes the store refuse to revoke a certificate while it is on: a crash
    between withholding a certificate and revoking it, as the database sees it."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url

    async def _run(self, *statements: str) -> None:
        engine = create_engine_for(self._url)
        try:
            async with engine.begin() as connection:
                for statement in statements:
                    await connection.exec_driver_sql(statement)
        finally:
            await engine.dispose()

    async def arm(self) -> None:
        if self._url.startswith("sqlite"):
            await self._run(
                "CREATE TABLE fault (on_ INTEGER)",
                "INSERT INTO fault VALUES (1)",
                "CREATE TRIGGER refuse_revocation BEFORE UPDATE OF revoked_at ON certificate "
                "WHEN EXISTS (SELECT 1 FROM fault) BEGIN SELECT RAISE(ABORT, 'injected'); END",
            )
            return
        await self._run(
            "CREATE TABLE fault (on_ INTEGER)",
            "INSERT INTO fault VALUES (1)",
            "CREATE FUNCTION refuse_revocation() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN IF EXISTS (SELECT 1 FROM fault) THEN RAISE EXCEPTION 'injected'; END IF; "
            "RETURN NEW; END $$",
            "CREATE TRIGGER refuse_revocation BEFORE UPDATE OF revoked_at ON certificate "
            "FOR EACH ROW EXECUTE FUNCTION refuse_revocation()",
        )

    async def clear(self) -> None:
        await self._run("DELETE FROM fault")


async def test_withholding_a_certificate_and_revoking_it_happen_together(
    deployment_settings: Settings, intune_sim: IntuneSim
):
    """A crash between marking the request FAILED and revoking its certificate
    must not leave a failed request whose certificate still counts as valid."""
    intune_sim.admin.add_fault(
        Route.SUCCESS_NOTIFICATION, "code", code="SimInventedUnknownCode", count=10_000
    )
    patient = deployment_settings.model_copy(
        update={"sync_wait_seconds": 0, "retry_max_attempts": 50}
    )
    fault = RevocationFault(patient.effective_database_url)
    async with running(patient) as product:
        await fault.arm()
        await enrol(product, "atomic", "tx-atomic", mint(intune_sim, "atomic"))
        repository = product.embedded.repository

        async def tried_to_withhold() -> bool:
            request = await repository.get("tx-atomic")
            failed = request is not None and request.state is RequestState.FAILED
            return failed or len(intune_sim.admin.calls(Route.SUCCESS_NOTIFICATION)) >= 2

        await eventually(tried_to_withhold, "the notify step trying to withhold")
        during = await repository.get("tx-atomic")
        assert during is not None and during.cert_serial is not None
        certificate = await repository.get_certificate(during.cert_serial)
        assert certificate is not None
        # Either both happened or neither: never FAILED with a valid certificate.
        assert during.state is RequestState.SIGNED and not certificate.is_revoked

        await fault.clear()

        async def withheld() -> bool:
            request = await repository.get("tx-atomic")
            return request is not None and request.state is RequestState.FAILED

        await eventually(withheld, "the certificate withheld")
        certificate = await repository.get_certificate(during.cert_serial)
    assert certificate is not None and certificate.is_revoked

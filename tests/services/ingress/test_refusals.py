"""A message refused before a request was recorded leaves its transaction id,
what the client was told and why, where `scepline request show` finds it."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text

from scepline_shared.scep import (
    ContentEncryption,
    FailInfo,
    MessageType,
    PkiStatus,
    issuer_and_subject,
)
from scepline_shared.store import create_engine_for
from tests.fixtures.scepline import RunningScepline
from tests.support.exchange import Exchange
from tests.support.pki import name, requester


@pytest.fixture
def scep(scepline: RunningScepline) -> Exchange:
    return Exchange(scepline)


async def test_single_des_refused_is_found_with_the_setting_that_would_accept_it(
    scep: Exchange,
):
    rep = await scep.enrol(
        requester("des"), encryption=ContentEncryption.DES_CBC, transaction_id="tx-des"
    )
    assert rep.fail_info is FailInfo.BAD_ALG

    [refusal] = await scep.scepline.embedded.repository.refusals("tx-des")

    assert refusal.fail_info == FailInfo.BAD_ALG
    assert refusal.message_type == MessageType.PKCS_REQ
    assert "is not allowed" in refusal.reason
    assert "SCEPLINE_SCEP_ALLOW_DES=true" in refusal.reason
    assert await scep.scepline.embedded.repository.get("tx-des") is None


async def test_a_stale_signing_time_and_a_poll_for_nothing_are_found_too(scep: Exchange):
    stale = await scep.enrol(
        requester("late"),
        signing_time=dt.datetime.now(dt.UTC) - dt.timedelta(days=3),
        transaction_id="tx-late",
    )
    poll = issuer_and_subject(scep.scepline.embedded.material.ca.certificate.subject, name("x"))
    unknown = await scep.send(
        requester("poller"), MessageType.CERT_POLL, poll, transaction_id="tx-never"
    )
    assert (stale.fail_info, unknown.fail_info) == (FailInfo.BAD_TIME, FailInfo.BAD_CERT_ID)

    repository = scep.scepline.embedded.repository
    [late] = await repository.refusals("tx-late")
    [never] = await repository.refusals("tx-never")

    assert late.fail_info == FailInfo.BAD_TIME
    assert (never.fail_info, never.message_type) == (FailInfo.BAD_CERT_ID, MessageType.CERT_POLL)


async def test_the_client_gets_its_failure_even_when_the_refusal_cannot_be_kept(
    scep: Exchange,
):
    engine = create_engine_for(scep.scepline.settings.effective_database_url)
    async with engine.begin() as connection:
        await connection.execute(text("DROP TABLE refusal"))
    await engine.dispose()

    rep = await scep.enrol(
        requester("des-2"), encryption=ContentEncryption.DES_CBC, transaction_id="tx-des-2"
    )

    assert rep.status is PkiStatus.FAILURE
    assert rep.fail_info is FailInfo.BAD_ALG

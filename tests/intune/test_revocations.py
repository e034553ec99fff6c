"""Intune's revocation requests (docs/specs/intune-api.md, "Revocation requests"):
a device retired in Intune loses its certificate, in the store and in the next
CRL. Against the simulator, on both deployments; the requests are queued the way
Intune would, from the success notifications the simulator recorded."""

from __future__ import annotations

import httpx
import pytest
from cryptography import x509

from scepline_devtools.intune_sim import Route
from scepline_notifier.revocations import RevocationSync
from scepline_shared.ca.issue import parse_serial
from scepline_shared.intune import IntuneProtocolError
from scepline_shared.intune.wire import RevocationError, parse_revocation_requests
from scepline_shared.keys import spki_sha256_hex
from scepline_shared.scep import PkiStatus
from scepline_shared.settings import Settings
from scepline_shared.store.certificates import CRL_REASON_CESSATION_OF_OPERATION
from scepline_shared.store.repository import RequestRepository
from tests.fixtures.scepline import RunningScepline, running
from tests.intune.support import enrol, eventually, intune_client, mint
from tests.intune_sim.fixtures import IntuneSim


async def issued_serial(product: RunningScepline, sim: IntuneSim, label: str) -> int:
    rep = await enrol(product, label, f"tx-{label}", mint(sim, label))
    assert rep.status is PkiStatus.SUCCESS
    return rep.certificates[0].serial_number


async def in_latest_crl(product: RunningScepline, serial: int) -> bool:
    ca = product.embedded.material.ca.certificate
    crl = await product.embedded.repository.latest_crl(spki_sha256_hex(ca.public_key()))
    if crl is None:
        return False
    listed = x509.load_der_x509_crl(crl.der).get_revoked_certificate_by_serial_number(serial)
    return listed is not None


def sync_for(repository: RequestRepository, sim: IntuneSim) -> RevocationSync:
    client = intune_client(sim, retry_budget_seconds=0.5)
    return RevocationSync(repository=repository, intune=client, interval=60)


async def test_a_device_retired_in_intune_loses_its_certificate_in_the_next_crl(
    deployment_settings: Settings, intune_sim: IntuneSim
):
    settings = deployment_settings.model_copy(
        update={"intune_revocation_interval_seconds": 0.2, "crl_check_interval_seconds": 0.2}
    )
    async with running(settings) as product:
        serial = await issued_serial(product, intune_sim, "retired")
        kept = await issued_serial(product, intune_sim, "kept")
        intune_sim.admin.queue_revocations(transaction_id="tx-retired")

        async def reported() -> bool:
            return bool(intune_sim.admin.revocations()["results"])

        await eventually(reported, "the revocation result uploaded to Intune")

        async def listed() -> bool:
            return await in_latest_crl(product, serial)

        await eventually(listed, "the serial in the latest CRL")
        repository = product.embedded.repository
        revoked = await repository.get_certificate(serial)
        untouched = await repository.get_certificate(kept)
        still_listed = await in_latest_crl(product, kept)
    [result] = intune_sim.admin.revocations()["results"]
    assert result["succeeded"] is True
    assert result["error_code"] == 0
    assert result["known"] is True
    assert revoked is not None and revoked.revocation_reason == CRL_REASON_CESSATION_OF_OPERATION
    assert untouched is not None and untouched.revoked_at is None
    assert not still_listed
    assert intune_sim.admin.revocations()["pending"] == []


async def test_unknown_serials_are_reported_and_a_repeat_request_counts_as_done(
    deployment_settings: Settings, intune_sim: IntuneSim
):
    async with running(deployment_settings) as product:
        serial = await issued_serial(product, intune_sim, "twice")
        repository = product.embedded.repository
        sync = sync_for(repository, intune_sim)
        # The first round revoked it but Intune did not take the results, so
        # the same request comes again: it must not read as a failure.
        intune_sim.admin.add_fault(Route.UPLOAD_REVOCATION_RESULTS, "false_value", count=1)
        ours = product.embedded.material.ca.certificate.subject.rfc4514_string()
        intune_sim.admin.queue_revocations(transaction_id="tx-twice")
        intune_sim.admin.queue_revocations(serial_number="abcdef1234", issuer_name=ours)
        intune_sim.admin.queue_revocations(serial_number="not-a-serial", issuer_name=ours)

        first = await sync.sync_once()
        again = await sync.sync_once()
        third = await sync.sync_once()
        revoked = await repository.get_certificate(serial)
    by_code = sorted(result.error for result in first)
    assert by_code == [
        RevocationError.NONE,
        RevocationError.PARAMETER_DATA_INVALID,
        RevocationError.CERTIFICATE_NOT_FOUND,
    ]
    assert len(again) == 3 and sorted(r.error for r in again) == by_code
    assert third == []  # all answered: nothing pending at Intune
    assert revoked is not None and revoked.revoked_at is not None
    uploaded = intune_sim.admin.revocations()["results"]
    assert sorted(r["error_code"] for r in uploaded) == [0, 4002, 4004]
    assert all(r["succeeded"] is (r["error_code"] == 0) for r in uploaded)


async def test_requests_for_another_ca_of_the_tenant_are_left_to_it(
    deployment_settings: Settings, intune_sim: IntuneSim
):
    async with running(deployment_settings) as product:
        serial = await issued_serial(product, intune_sim, "ours")
        sync = sync_for(product.embedded.repository, intune_sim)
        intune_sim.admin.queue_revocations(transaction_id="tx-ours")
        intune_sim.admin.queue_revocations(serial_number="abcdef1234", issuer_name="CN=Other CA")

        [done] = await sync.sync_once()
        revoked = await product.embedded.repository.get_certificate(serial)
    assert done.error is RevocationError.NONE
    assert revoked is not None and revoked.revoked_at is not None
    [theirs] = intune_sim.admin.revocations()["pending"]
    assert theirs["issuer_name"] == "CN=Other CA"


async def test_an_intune_outage_leaves_the_requests_for_a_later_round(
    deployment_settings: Settings, intune_sim: IntuneSim
):
    async with running(deployment_settings) as product:
        serial = await issued_serial(product, intune_sim, "later")
        repository = product.embedded.repository
        sync = sync_for(repository, intune_sim)
        intune_sim.admin.queue_revocations(transaction_id="tx-later")
        intune_sim.admin.add_fault(
            Route.DOWNLOAD_REVOCATION_REQUESTS, "unavailable", count=1000, retry_after=0
        )

        assert await sync.sync_once() == []
        untouched = await repository.get_certificate(serial)
        intune_sim.admin.clear_faults()
        [done] = await sync.sync_once()
        revoked = await repository.get_certificate(serial)
    assert untouched is not None and untouched.revoked_at is None
    assert done.error is RevocationError.NONE
    assert revoked is not None and revoked.revoked_at is not None


def test_serials_are_read_however_intune_spells_them():
    assert parse_serial("0a1b") == parse_serial("A1B") == parse_serial("0a:1b") == 0xA1B
    assert parse_serial("0a 1b") == 0xA1B
    assert parse_serial("") is None
    assert parse_serial("0") is None  # no certificate has serial 0
    assert parse_serial("xyz") is None


def test_an_unreadable_download_is_a_protocol_error_not_a_crash():
    response = httpx.Response(200, json={"value": [{"serialNumber": "01"}]})
    with pytest.raises(IntuneProtocolError, match="downloadRevocationRequests"):
        parse_revocation_requests(response, "activity-1")

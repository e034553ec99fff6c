"""A CA rollover through the running product, on both deployments.

Before the switch devices see the next CA through GetNextCACert (signed by the
current CA) while the current CA keeps issuing; after it, new certificates chain
to the new CA, and devices that enrolled before the switch (holding the old RA
certificate) still get their answers when they poll.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from cryptography import x509

from scepline_devtools.scep_client import ScepClient, build_csr
from scepline_shared.ca import stage_rollover
from scepline_shared.ca.keysource import KeySource
from scepline_shared.scep import PkiStatus, read_next_ca_response
from scepline_shared.settings import Settings
from scepline_validator.challenge import (
    StaticChallengeValidator,
    ValidationOutcome,
    ValidationRequest,
)
from tests.fixtures.scepline import (
    CHALLENGE,
    DEPLOYMENTS,
    lab_deployment,
    running,
)
from tests.support.pki import name, requester

SWITCH_AFTER = dt.timedelta(seconds=4)


class HeldChallenge:
    """The challenge service, but an operator decides when it answers: keeps a
    request PENDING across the switch."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()
        self._real = StaticChallengeValidator(CHALLENGE)

    async def validate(self, request: ValidationRequest) -> ValidationOutcome:
        await self.open.wait()
        return await self._real.validate(request)


@pytest.fixture(params=DEPLOYMENTS)
async def settings(request: pytest.FixtureRequest) -> AsyncIterator[Settings]:
    async with lab_deployment(
        request,
        sync_wait_seconds=1,
        ca_key_size=2048,
        ca_common_name="scepline lab CA G2",
    ) as settings:
        yield settings


async def enrol(client: ScepClient, label: str):  # type: ignore[no-untyped-def]
    who = requester(label)
    csr = build_csr(who.key, name(label), challenge=CHALLENGE)
    return await client.enrol(csr, who, transaction_id=f"tx-{label}")


async def poll(client: ScepClient, label: str):  # type: ignore[no-untyped-def]
    return await client.poll(requester(label), f"tx-{label}", name(label))


async def test_clients_see_the_next_ca_before_the_switch_and_use_it_after(
    settings: Settings,
):
    held = HeldChallenge()
    async with running(settings, challenge=held) as product:
        old_ca = product.embedded.material.ca.certificate
        device = product.client  # keeps the GetCACert answer it got before the switch
        before = await enrol(device, "before-switch")
        assert before.status is PkiStatus.SUCCESS

        switch_at = dt.datetime.now(dt.UTC) + SWITCH_AFTER
        staged = await asyncio.to_thread(
            stage_rollover,
            settings.data_dir,
            KeySource(backend="file"),
            switch_at=switch_at,
            ca_key_size=2048,
            ca_common_name=settings.ca_common_name,
        )
        new_ca = staged.material.ca.certificate
        assert product.embedded.ca.check()  # what the watcher's next poll does

        assert "GetNextCACert" in await device.get_ca_caps()
        response = await product.http.get("/scep", params={"operation": "GetNextCACert"})
        assert response.headers["content-type"] == "application/x-x509-next-ca-cert"
        assert new_ca in read_next_ca_response(response.content, old_ca)
        still_old = await enrol(ScepClient("http://scepline/scep", http=product.http), "staged")
        still_old.certificates[0].verify_directly_issued_by(old_ca)
        held.open.clear()
        across = await enrol(device, "across-switch")
        assert across.status is PkiStatus.PENDING

        await asyncio.sleep((switch_at - dt.datetime.now(dt.UTC)).total_seconds() + 0.2)
        held.open.set()

        # Devices holding the old RA certificate: their polls are still answered.
        issued_before = await poll(device, "before-switch")
        assert issued_before.status is PkiStatus.SUCCESS
        issued_before.certificates[0].verify_directly_issued_by(old_ca)
        for _ in range(100):
            issued_across = await poll(device, "across-switch")
            if issued_across.status is not PkiStatus.PENDING:
                break
            await asyncio.sleep(0.1)
        assert issued_across.status is PkiStatus.SUCCESS
        issued_across.certificates[0].verify_directly_issued_by(new_ca)

        # A device that starts now gets the new RA and CA, and the old CA as chain.
        fresh = ScepClient("http://scepline/scep", http=product.http)
        published = await fresh.get_ca_certs()
        assert new_ca in published and old_ca in published
        assert fresh.ra_certificate == staged.material.ra.certificate
        after = await enrol(fresh, "after-switch")
        assert after.status is PkiStatus.SUCCESS
        after.certificates[0].verify_directly_issued_by(new_ca)
        assert _issuer_name(after.certificates[0]) == "CN=scepline lab CA G2"

        assert "GetNextCACert" not in await fresh.get_ca_caps()
        gone = await product.http.get("/scep", params={"operation": "GetNextCACert"})
        assert gone.status_code == 404


def _issuer_name(certificate: x509.Certificate) -> str:
    return certificate.issuer.rfc4514_string()

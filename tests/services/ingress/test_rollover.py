"""CA rollover as ingress sees it: several RA keys decrypt, each reply is signed
by the RA the client encrypted to, and a staged CA is served by GetNextCACert."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from scepline_devtools.scep_client import ScepClient, build_csr
from scepline_ingress.identity import ScepIdentity, identity_from_schedule, schedule_identities
from scepline_shared.ca import CaMaterial
from scepline_shared.ca.keysource import KeySource
from scepline_shared.ca.lab import ca_certificate, ra_certificate
from scepline_shared.ca.rollover import stage_rollover
from scepline_shared.ca.schedule import load_ca_schedule
from scepline_shared.keys import KeyPair
from scepline_shared.scep import (
    FailInfo,
    MessageType,
    PkiStatus,
    build_degenerate,
    issuer_and_subject,
    parse_degenerate,
)
from scepline_shared.settings import Settings
from tests.fixtures.scepline import CHALLENGE, RunningScepline, running
from tests.services.ingress.support import (
    Beside,
    PkcsReq,
    ingress_beside,
    lab_validity,
    product_identity,
)
from tests.support.pki import name, requester, rsa_key, self_signed

NEXT_CA_KEY = rsa_key("rollover-next-ca")
NEXT_RA_KEY = rsa_key("rollover-next-ra")
NEXT_CA = ca_certificate(NEXT_CA_KEY, "scepline CA g1", **lab_validity())
NEXT_RA = ra_certificate(
    KeyPair(NEXT_CA_KEY, NEXT_CA), NEXT_RA_KEY, "scepline RA g1", **lab_validity()
)
# Stands in for the pre-signed GetNextCACert body: ingress serves it byte for byte.
NEXT_CA_RESPONSE = build_degenerate([NEXT_CA, NEXT_RA])


@dataclass
class Switch:
    """The identity source of a rollover test: before, staged, after the switch."""

    current: ScepIdentity
    calls: int = field(default=0)

    def __call__(self) -> ScepIdentity:
        self.calls += 1
        return self.current


@dataclass
class Rollover:
    """An ingress beside the product answering as ``switch.current`` (the product's
    identity, ``before``, until the test switches it), and ``holds_old``: a client
    that fetched GetCACert before any switch."""

    before: ScepIdentity
    switch: Switch
    ingress: Beside
    holds_old: ScepClient


@contextlib.asynccontextmanager
async def rollover_beside(product: RunningScepline) -> AsyncIterator[Rollover]:
    before = product_identity(product)
    switch = Switch(before)
    async with ingress_beside(product, switch) as ingress:
        holds_old = ingress.client()
        await holds_old.get_ca_certs()
        yield Rollover(before, switch, ingress, holds_old)


def staged(before: ScepIdentity) -> ScepIdentity:
    return ScepIdentity(
        ra_key=before.ra_key,
        ra_certificate=before.ra_certificate,
        ca_certificate=before.ca_certificate,
        decryptors=((before.ra_key, before.ra_certificate), (NEXT_RA_KEY, NEXT_RA)),
        next_ca_response=NEXT_CA_RESPONSE,
    )


def switched(before: ScepIdentity) -> ScepIdentity:
    return ScepIdentity(
        ra_key=NEXT_RA_KEY,
        ra_certificate=NEXT_RA,
        ca_certificate=NEXT_CA,
        previous_ca_certificates=(before.ca_certificate,),
        decryptors=((NEXT_RA_KEY, NEXT_RA), (before.ra_key, before.ra_certificate)),
    )


async def enrol(client: ScepClient, label: str, challenge: str | None = CHALLENGE):
    who = requester(label)
    csr = build_csr(who.key, name(label), challenge=challenge)
    return await client.enrol(csr, who, transaction_id=f"tx-{label}")


async def test_request_to_the_old_ra_after_the_switch_is_answered_by_the_old_ra(
    scepline: RunningScepline,
):
    async with rollover_beside(scepline) as rollover:
        before, holds_old, ingress = rollover.before, rollover.holds_old, rollover.ingress
        assert holds_old.ra_certificate == before.ra_certificate

        rollover.switch.current = switched(before)
        # read_cert_rep checks the CertRep is signed by the RA this client holds.
        rep = await enrol(holds_old, "rollover-old-ra")
        assert rep.status is PkiStatus.SUCCESS
        assert rep.certificates[0].subject == name("rollover-old-ra")

        # A client that fetches GetCACert now sees the new RA, the new CA and the old CA.
        fresh = ingress.client()
        certificates = await fresh.get_ca_certs()
        # A DER SET OF: in the order of the encodings, not the identity's.
        assert len(certificates) == 3
        assert set(certificates) == {NEXT_RA, NEXT_CA, before.ca_certificate}
        assert fresh.ra_certificate == NEXT_RA
        rep = await enrol(fresh, "rollover-new-ra")
        assert rep.status is PkiStatus.SUCCESS


async def test_a_failure_after_decryption_is_signed_by_the_ra_the_client_used(
    scepline: RunningScepline,
):
    async with rollover_beside(scepline) as rollover:
        holds_old = rollover.holds_old
        rollover.switch.current = switched(rollover.before)

        wrong_challenge = await enrol(holds_old, "rollover-wrong", challenge="wrong")
        assert wrong_challenge.status is PkiStatus.FAILURE
        assert wrong_challenge.fail_info is FailInfo.BAD_REQUEST

        not_a_csr = await holds_old.exchange(
            MessageType.PKCS_REQ, b"not a csr", requester("rollover-garbage")
        )
        assert not_a_csr.status is PkiStatus.FAILURE
        assert not_a_csr.fail_info is FailInfo.BAD_REQUEST


async def test_a_request_no_ra_can_open_is_answered_by_the_active_ra(scepline: RunningScepline):
    before = product_identity(scepline)
    async with ingress_beside(scepline, switched(before)) as ingress:
        stranger = self_signed(rsa_key("rollover-stranger-ra"), "stranger RA")
        request = PkcsReq.to(stranger, "rollover-stranger", "tx-stranger")
        rep = request.reply(await ingress.client().send(request.der), signed_by=NEXT_RA)
        assert rep.status is PkiStatus.FAILURE
        assert rep.fail_info is FailInfo.BAD_MESSAGE_CHECK


async def test_an_ra_no_longer_among_the_decryptors_is_bad_message_check(
    scepline: RunningScepline,
):
    async with rollover_beside(scepline) as rollover:
        # The old generation has ended: only the new RA decrypts.
        rollover.switch.current = ScepIdentity(
            ra_key=NEXT_RA_KEY, ra_certificate=NEXT_RA, ca_certificate=NEXT_CA
        )
        old_ra = rollover.before.ra_certificate
        request = PkcsReq.to(old_ra, "rollover-expired", "tx-expired")
        rep = request.reply(await rollover.holds_old.send(request.der), signed_by=NEXT_RA)
        assert rep.fail_info is FailInfo.BAD_MESSAGE_CHECK


async def test_a_poll_for_a_request_made_before_the_switch_still_succeeds(
    scepline_settings: Settings,
):
    """A device got PENDING before the switch and polls with the old RA afterwards."""
    no_wait = scepline_settings.model_copy(update={"sync_wait_seconds": 0})
    async with running(no_wait) as product, rollover_beside(product) as rollover:
        before, client = rollover.before, rollover.holds_old
        who = requester("rollover-poller")
        csr = build_csr(who.key, name("rollover-poller"), challenge=CHALLENGE)
        first = await client.enrol(csr, who, transaction_id="tx-poller")
        assert first.status is PkiStatus.PENDING

        rollover.switch.current = switched(before)
        poll = issuer_and_subject(before.ca_certificate.subject, name("rollover-poller"))
        for _ in range(200):
            rep = await client.exchange(
                MessageType.CERT_POLL, poll, who, transaction_id="tx-poller"
            )
            if rep.status is not PkiStatus.PENDING:
                break
            await _sleep(0.05)
        assert rep.status is PkiStatus.SUCCESS
        rep.certificates[0].verify_directly_issued_by(before.ca_certificate)


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def get(ingress: Beside, operation: str):
    return await ingress.http.get("/scep", params={"operation": operation})


async def test_get_next_ca_cert_serves_the_staged_generation_only_while_staged(
    scepline: RunningScepline,
):
    before = product_identity(scepline)
    switch = Switch(before)
    async with ingress_beside(scepline, switch) as ingress:
        assert (await get(ingress, "GetNextCACert")).status_code == 404
        assert "GetNextCACert" not in (await get(ingress, "GetCACaps")).text.split()

        switch.current = staged(before)
        response = await get(ingress, "GetNextCACert")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-x509-next-ca-cert"
        assert response.content == NEXT_CA_RESPONSE
        assert "GetNextCACert" in (await get(ingress, "GetCACaps")).text.split()
        # GetCACert still names the current RA and CA only.
        certificates, _ = parse_degenerate((await get(ingress, "GetCACert")).content)
        assert certificates == [before.ra_certificate, before.ca_certificate]
        # A client that already took the staged RA from GetNextCACert may use it.
        early = ingress.client()
        await early.get_ca_certs()
        assert early.ra_certificate == before.ra_certificate

        switch.current = switched(before)
        assert (await get(ingress, "GetNextCACert")).status_code == 404
        assert "GetNextCACert" not in (await get(ingress, "GetCACaps")).text.split()


async def test_each_operation_asks_the_identity_source_once(scepline: RunningScepline):
    switch = Switch(product_identity(scepline))
    async with ingress_beside(scepline, switch) as ingress:
        client = ingress.client()
        await client.get_ca_certs()
        switch.calls = 0
        rep = await enrol(client, "rollover-once")
        assert rep.status is PkiStatus.SUCCESS
        assert switch.calls == 1


# -- identity from a CA schedule ---------------------------------------------------


@dataclass(frozen=True)
class Generation:
    number: int
    material: CaMaterial
    next_ca_response: bytes | None = None


@dataclass
class FakeSchedule:
    """What ingress uses of scepline_shared.ca.schedule.CaSchedule; ``switched``
    plays the clock passing the staged generation's switch-at."""

    old: Generation
    new: Generation
    switched: bool = False

    def active(self, now: dt.datetime | None = None) -> Generation:
        return self.new if self.switched else self.old

    def previous(self, now: dt.datetime | None = None) -> tuple[Generation, ...]:
        return (self.old,) if self.switched else ()

    def staged(self, now: dt.datetime | None = None) -> Generation | None:
        return None if self.switched else self.new

    def material(self, now: dt.datetime | None = None) -> CaMaterial:
        active = self.active(now)
        chain = tuple(g.material.ca.certificate for g in self.previous(now))
        return CaMaterial(ca=active.material.ca, ra=active.material.ra, chain=chain)

    def decryptors(self, now: dt.datetime | None = None) -> tuple[KeyPair, ...]:
        return (self.new.material.ra, self.old.material.ra)


def fake_schedule(product: RunningScepline) -> FakeSchedule:
    material = product.embedded.material
    new = CaMaterial(ca=KeyPair(NEXT_CA_KEY, NEXT_CA), ra=KeyPair(NEXT_RA_KEY, NEXT_RA))
    return FakeSchedule(
        old=Generation(0, CaMaterial(ca=material.ca, ra=material.ra)),
        new=Generation(1, new, next_ca_response=NEXT_CA_RESPONSE),
    )


def test_identity_from_a_schedule_before_and_after_the_switch(scepline: RunningScepline):
    schedule = fake_schedule(scepline)
    old_ra = scepline.embedded.material.ra
    before = identity_from_schedule(schedule)
    assert before.ra_certificate == old_ra.certificate
    assert before.next_ca_response == NEXT_CA_RESPONSE
    assert [c for _, c in before.decryptors] == [NEXT_RA, old_ra.certificate]

    schedule.switched = True
    after = identity_from_schedule(schedule)
    assert after.ra_certificate == NEXT_RA
    assert after.ca_certificates == (NEXT_CA, scepline.embedded.material.ca.certificate)
    assert after.next_ca_response is None


def test_schedule_identities_rebuilds_only_when_the_moment_changes(scepline: RunningScepline):
    schedule = fake_schedule(scepline)
    identities = schedule_identities(lambda: schedule)
    first = identities()
    assert identities() is first  # cached: one GetCACert body per moment
    schedule.switched = True
    after = identities()
    assert after is not first
    assert after.ra_certificate == NEXT_RA
    assert identities() is after


async def test_an_app_built_on_a_schedule_follows_the_switch(scepline: RunningScepline):
    schedule = fake_schedule(scepline)
    async with ingress_beside(scepline, schedule_identities(lambda: schedule)) as ingress:
        holds_old = ingress.client()
        await holds_old.get_ca_certs()
        assert "GetNextCACert" in (await get(ingress, "GetCACaps")).text.split()
        schedule.switched = True
        assert (await get(ingress, "GetNextCACert")).status_code == 404
        rep = await enrol(holds_old, "rollover-schedule")
        assert rep.status is PkiStatus.SUCCESS


@pytest.mark.parametrize("bad", [b"", b"\x30\x00", os.urandom(64)], ids=["empty", "seq", "noise"])
async def test_unreadable_messages_are_400_after_a_switch(scepline: RunningScepline, bad: bytes):
    async with ingress_beside(scepline, switched(product_identity(scepline))) as ingress:
        response = await ingress.http.post("/scep?operation=PKIOperation", content=bad)
        assert response.status_code == 400


def test_the_active_ra_always_decrypts():
    key = rsa_key("rollover-lonely")
    certificate = self_signed(key, "lonely RA")
    identity = ScepIdentity(ra_key=key, ra_certificate=certificate, ca_certificate=certificate)
    assert identity.decryptors == ((key, certificate),)
    other: rsa.RSAPrivateKey = rsa_key("rollover-other")
    other_certificate: x509.Certificate = self_signed(other, "other RA")
    with_other = ScepIdentity(
        ra_key=key,
        ra_certificate=certificate,
        ca_certificate=certificate,
        decryptors=((other, other_certificate),),
    )
    assert [c for _, c in with_other.decryptors] == [certificate, other_certificate]


def test_identity_from_a_real_staged_rollover(tmp_path: Path, lab_ca_dir: Path):
    """The same through scepline_shared.ca: init, stage, before and after switch-at."""
    shutil.copytree(lab_ca_dir, tmp_path / "ca")
    keys = KeySource(backend="file")
    switch_at = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    staged_generation = stage_rollover(tmp_path, keys, switch_at=switch_at)
    schedule = load_ca_schedule(tmp_path, keys)
    old = schedule.generation(0).material

    before = identity_from_schedule(schedule)
    assert before.ra_certificate == old.ra.certificate
    assert before.next_ca_response == staged_generation.next_ca_response is not None
    assert staged_generation.material.ra.certificate in [c for _, c in before.decryptors]

    after = identity_from_schedule(schedule, switch_at + dt.timedelta(seconds=1))
    assert after.ra_certificate == staged_generation.material.ra.certificate
    assert after.ca_certificates == (
        staged_generation.material.ca.certificate,
        old.ca.certificate,
    )
    assert old.ra.certificate in [c for _, c in after.decryptors]
    assert after.next_ca_response is None

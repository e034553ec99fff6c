"""A CA signs only for identities something checked: renewals keep the identity of
the certificate they renew, names a shared challenge cannot vouch for are refused,
and revoking any certificate of a renewal lineage stops renewals from it.

Tried as an attacker holding one valid certificate (CN=device-a) and the shared
static challenge would, on both deployments (the validator and signer run their
real code behind ingress)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from scepline_devtools.scep_client import Requester, build_csr
from scepline_shared.scep import CertRep, FailInfo, MessageType, PkiStatus
from scepline_shared.store.models import Approval, RequestState
from tests.fixtures.scepline import (
    CHALLENGE,
    DEPLOYMENTS,
    RunningScepline,
    lab_deployment,
    running,
)
from tests.shared.ca._pki import upn
from tests.support.exchange import Exchange
from tests.support.pki import name, requester, rsa_key

SID_URI = "tag:microsoft.com,2022-09-14:sid:S-1-5-21-1004336348-1177238915-682003330-500"
ADMIN_NAMES = (
    x509.DNSName("admin.corp.example"),
    upn("administrator@corp.test"),
    x509.RFC822Name("administrator@corp.example"),
    x509.UniformResourceIdentifier(SID_URI),
)


@pytest.fixture(params=DEPLOYMENTS)
async def product(request: pytest.FixtureRequest) -> AsyncIterator[RunningScepline]:
    async with lab_deployment(request, sync_wait_seconds=10) as settings, running(settings) as p:
        yield p


@pytest.fixture
def scep(product: RunningScepline) -> Exchange:
    return Exchange(product)


async def holding(scep: Exchange, label: str, cn: str, **options: object) -> Requester:
    """A device that enrolled with the shared challenge and now holds its certificate."""
    rep = await scep.enrol(requester(label), cn=cn, transaction_id=f"tx-{label}", **options)  # type: ignore[arg-type]
    assert rep.status is PkiStatus.SUCCESS, rep.fail_info_text
    return Requester(key=requester(label).key, certificate=rep.certificates[0])


async def renew(
    scep: Exchange,
    holder: Requester,
    *,
    cn: str,
    sans: tuple[x509.GeneralName, ...] = (),
    challenge: str | None = None,
    message_type: MessageType = MessageType.RENEWAL_REQ,
    transaction_id: str = "tx-renew",
) -> CertRep:
    """A request signed with ``holder``'s certificate, for a new key."""
    new_key = rsa_key(f"{transaction_id}-key")
    csr = build_csr(new_key, name(cn), challenge=challenge, sans=sans)
    return await scep.send(
        holder, message_type, csr.public_bytes(Encoding.DER), transaction_id=transaction_id
    )


def refused(rep: CertRep, *words: str) -> None:
    assert rep.status is PkiStatus.FAILURE
    assert rep.fail_info is FailInfo.BAD_REQUEST
    for word in words:
        assert word in (rep.fail_info_text or ""), rep.fail_info_text


class TestARenewalKeepsTheIdentityItRenews:
    async def test_renewing_into_another_subject_is_refused(self, scep: Exchange):
        device_a = await holding(scep, "a", "device-a")
        refused(await renew(scep, device_a, cn="device-b"), "needs a challenge", "subject")

    async def test_renewing_with_an_administrators_names_is_refused(self, scep: Exchange):
        device_a = await holding(scep, "a2", "device-a")
        for index, added in enumerate(ADMIN_NAMES):
            rep = await renew(
                scep, device_a, cn="device-a", sans=(added,), transaction_id=f"tx-add-{index}"
            )
            refused(rep, "needs a challenge")

    async def test_a_pkcsreq_signed_by_our_certificate_is_no_back_door(self, scep: Exchange):
        device_a = await holding(scep, "a3", "device-a")
        rep = await renew(scep, device_a, cn="device-b", message_type=MessageType.PKCS_REQ)
        refused(rep, "needs a challenge", "no challengePassword")

    async def test_the_same_identity_renews_without_a_challenge(
        self, scep: Exchange, product: RunningScepline
    ):
        dns = x509.DNSName("device-a.corp.example")
        device_a = await holding(scep, "a4", "device-a", sans=(dns,))

        rep = await renew(scep, device_a, cn="device-a", sans=(dns,))

        assert rep.status is PkiStatus.SUCCESS
        renewed = rep.certificates[0]
        assert renewed.subject == name("device-a")
        stored = await product.embedded.repository.get_certificate(renewed.serial_number)
        assert stored is not None
        assert stored.renews_serial == format(device_a.certificate.serial_number, "x")

    async def test_fewer_names_is_still_the_same_identity(self, scep: Exchange):
        names = (x509.DNSName("a.corp.example"), x509.DNSName("b.corp.example"))
        device_a = await holding(scep, "a5", "device-a", sans=names)
        rep = await renew(scep, device_a, cn="device-a", sans=names[:1])
        assert rep.status is PkiStatus.SUCCESS

    async def test_another_identity_with_the_challenge_is_a_first_enrolment(
        self, scep: Exchange, product: RunningScepline
    ):
        device_a = await holding(scep, "a6", "device-a")
        rep = await renew(
            scep,
            device_a,
            cn="device-b",
            challenge=CHALLENGE,
            message_type=MessageType.PKCS_REQ,
            transaction_id="tx-first",
        )
        assert rep.status is PkiStatus.SUCCESS
        stored = await product.embedded.repository.get_certificate(
            rep.certificates[0].serial_number
        )
        assert stored is not None and stored.renews_serial is None
        request = await product.embedded.repository.get(
            f"tx-first|renew:{device_a.certificate.serial_number:x}"
        )
        assert request is not None and request.approval is Approval.CHALLENGE

    async def test_a_challenge_does_not_vouch_for_account_names_even_then(self, scep: Exchange):
        device_a = await holding(scep, "a7", "device-a")
        rep = await renew(
            scep,
            device_a,
            cn="device-a",
            sans=(x509.UniformResourceIdentifier(SID_URI),),
            challenge=CHALLENGE,
        )
        refused(rep, "SID")


class TestRevokingAnyLinkStopsTheLineage:
    async def test_a_renewal_of_a_renewal_stops_when_the_first_is_revoked(
        self, scep: Exchange, product: RunningScepline
    ):
        first = await holding(scep, "l1", "lineage")
        second_rep = await renew(scep, first, cn="lineage", transaction_id="tx-l2")
        second = Requester(key=rsa_key("tx-l2-key"), certificate=second_rep.certificates[0])
        third_rep = await renew(scep, second, cn="lineage", transaction_id="tx-l3")
        assert third_rep.status is PkiStatus.SUCCESS
        third = Requester(key=rsa_key("tx-l3-key"), certificate=third_rep.certificates[0])

        await product.embedded.repository.revoke(first.certificate.serial_number, reason=1)

        refused(await renew(scep, third, cn="lineage", transaction_id="tx-l4"), "revoked")
        refused(await renew(scep, second, cn="lineage", transaction_id="tx-l5"), "revoked")

    async def test_revoking_the_signing_certificate_stops_it(
        self, scep: Exchange, product: RunningScepline
    ):
        holder = await holding(scep, "r1", "revoked-device")
        await product.embedded.repository.revoke(holder.certificate.serial_number, reason=1)
        refused(await renew(scep, holder, cn="revoked-device"), "is revoked")


class TestNamesAStaticChallengeCannotVouchFor:
    @pytest.mark.parametrize(
        ("cn", "sans", "why"),
        [
            ("scepline lab CA", (), "CA's own name"),
            ("device\x00.corp.example", (), "control characters"),
            ("device", (x509.DNSName("bad\x00.example"),), "control characters"),
            ("device", (x509.DNSName("*.corp.example"),), "wildcard"),
            ("*.corp.example", (), "wildcard"),
            ("device", (upn("admin@corp.test"),), "UPN"),
            ("device", (x509.UniformResourceIdentifier(SID_URI),), "SID"),
        ],
        ids=["ca-subject", "nul-in-cn", "nul-in-dns", "wildcard-dns", "wildcard-cn", "upn", "sid"],
    )
    async def test_refused_with_bad_request(
        self, scep: Exchange, product: RunningScepline, cn: str, sans: tuple, why: str
    ):
        rep = await scep.enrol(requester("n"), cn=cn, sans=sans, transaction_id="tx-names")
        refused(rep, why)
        request = await product.embedded.repository.get("tx-names")
        assert request is not None and request.state is RequestState.FAILED


@pytest.fixture(params=DEPLOYMENTS[:1])
async def exact_product(request: pytest.FixtureRequest) -> AsyncIterator[RunningScepline]:
    async with (
        lab_deployment(request, renewal_san_match="exact") as settings,
        running(settings) as p,
    ):
        yield p


async def test_exact_san_matching_refuses_a_renewal_that_drops_names(
    exact_product: RunningScepline,
):
    scep = Exchange(exact_product)
    names = (x509.DNSName("a.corp.example"), x509.DNSName("b.corp.example"))
    holder = await holding(scep, "x1", "exact", sans=names)
    refused(await renew(scep, holder, cn="exact", sans=names[:1]), "exact")
    same = await renew(scep, holder, cn="exact", sans=names, transaction_id="tx-same")
    assert same.status is PkiStatus.SUCCESS

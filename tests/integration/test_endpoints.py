"""Several SCEP endpoints in one running product (docs/endpoints.md), on both
deployments: each issues with its own profile; a one-time challenge works once;
a manual request waits PENDING for an operator; renewals stay at their
endpoint; the paths route where they say."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import AttributeOID, ExtendedKeyUsageOID

from scepline.endpoint_admin import decide
from scepline_devtools.scep_client import Requester, ScepClient, build_csr
from scepline_shared.scep import CertRep, FailInfo, PkiStatus
from scepline_shared.settings import Settings
from scepline_shared.store.challenges import challenge_sha256
from scepline_shared.store.models import Approval, RequestState
from tests.fixtures.scepline import (
    DEPLOYMENTS,
    RunningScepline,
    data_dir_with_ca,
    lab_deployment,
    running,
)
from tests.support.pki import name, requester, rsa_key

CONFIG = """
[endpoints.wifi]
challenge = "static"
static_challenge = "wifi-secret"

[endpoints.wifi.profile]
validity_days = 30
extended_key_usage = ["clientAuth"]

[endpoints.servers]
challenge = "one-time"
paths = ["/certsrv/mscep/mscep.dll"]

[endpoints.servers.profile]
validity_days = 90
extended_key_usage = ["serverAuth", "clientAuth"]
san_types = ["dns"]
required_san_types = ["dns"]
san_patterns = { dns = '[a-z0-9.-]+\\.example\\.com' }

[endpoints.gear]
challenge = "manual"

[endpoints.vpn]
challenge = "static"
static_challenge = "vpn-secret"
renewal = "never"

[endpoints.vpn.profile]
extended_key_usage_from_csr = ["serverAuth", "clientAuth", "ipsecIKE"]
"""


@pytest.fixture(params=DEPLOYMENTS)
async def product(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningScepline]:
    config = tmp_path / "scepline.toml"
    config.write_text(CONFIG)
    async with (
        lab_deployment(
            request, config=config, sync_wait_seconds=5, sweep_interval_seconds=0.2
        ) as settings,
        running(settings) as running_product,
    ):
        yield running_product


def at(product: RunningScepline, path: str) -> ScepClient:
    return ScepClient(f"http://scepline{path}", http=product.http)


async def enrol(
    product: RunningScepline,
    path: str,
    label: str,
    *,
    challenge: str | None,
    sans: tuple[x509.GeneralName, ...] = (),
    who: Requester | None = None,
    transaction_id: str | None = None,
    csr: x509.CertificateSigningRequest | None = None,
) -> CertRep:
    who = who or requester(label)
    csr = csr or build_csr(who.key, name(label), challenge=challenge, sans=sans)
    return await at(product, path).enrol(csr, who, transaction_id=transaction_id or f"tx-{label}")


async def one_time(
    product: RunningScepline,
    *,
    expires_in: dt.timedelta = dt.timedelta(hours=1),
    subject: str | None = None,
    sans: tuple[str, ...] = (),
) -> str:
    challenge = f"otc-{dt.datetime.now().timestamp()}-{len(sans)}-{subject}"
    await product.embedded.repository.add_challenges(
        endpoint="servers",
        hashes=[challenge_sha256(challenge)],
        expires_at=dt.datetime.now(dt.UTC) + expires_in,
        bound_subject=subject,
        bound_sans=sans,
    )
    return challenge


def ekus(certificate: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def lifetime(certificate: x509.Certificate) -> dt.timedelta:
    return certificate.not_valid_after_utc - certificate.not_valid_before_utc


DNS = (x509.DNSName("web-1.example.com"),)


async def test_each_endpoint_issues_with_its_own_profile(product: RunningScepline):
    wifi = await enrol(product, "/scep/wifi", "laptop-1", challenge="wifi-secret")
    servers = await enrol(
        product, "/scep/servers", "web-1", challenge=await one_time(product), sans=DNS
    )

    assert wifi.status is PkiStatus.SUCCESS and servers.status is PkiStatus.SUCCESS
    [laptop], [web] = wifi.certificates, servers.certificates
    assert ekus(laptop) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ekus(web) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert lifetime(laptop) == dt.timedelta(days=30, minutes=5)  # 5 min backdated
    assert lifetime(web) == dt.timedelta(days=90, minutes=5)
    repository = product.embedded.repository
    stored = await repository.get_certificate(web.serial_number)
    request = await repository.get("tx-web-1|at:servers")
    assert stored is not None and stored.endpoint == "servers"
    assert request is not None and request.endpoint == "servers"


async def test_a_static_endpoint_refuses_another_endpoints_secret(product: RunningScepline):
    refused = await enrol(product, "/scep/wifi", "laptop-2", challenge="vpn-secret")
    default = await enrol(product, "/scep", "laptop-3", challenge="wifi-secret")

    assert refused.status is PkiStatus.FAILURE and refused.fail_info is FailInfo.BAD_REQUEST
    assert refused.fail_info_text == "the challengePassword is wrong"
    assert default.status is PkiStatus.FAILURE  # the default endpoint has its own


async def test_a_one_time_challenge_works_once(product: RunningScepline):
    challenge = await one_time(product)

    first = await enrol(product, "/scep/servers", "web-2", challenge=challenge, sans=DNS)
    second = await enrol(product, "/scep/servers", "web-3", challenge=challenge, sans=DNS)
    elsewhere = await enrol(product, "/scep/wifi", "web-4", challenge=challenge)

    assert first.status is PkiStatus.SUCCESS
    assert (second.status, second.fail_info) == (PkiStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert second.fail_info_text == "challenge already used"
    assert elsewhere.status is PkiStatus.FAILURE
    used = await product.embedded.repository.challenge(challenge_sha256(challenge))
    assert used is not None and used.used_by == "tx-web-2|at:servers"


async def test_an_expired_or_bound_challenge_is_refused_with_its_reason(
    product: RunningScepline,
):
    expired = await one_time(product, expires_in=dt.timedelta(seconds=-1))
    bound = await one_time(product, subject="CN=web-5")
    named = await one_time(product, sans=("dns:web-7.example.com",))

    late = await enrol(product, "/scep/servers", "web-5", challenge=expired, sans=DNS)
    stranger = await enrol(product, "/scep/servers", "web-6", challenge=bound, sans=DNS)
    rightful = await enrol(
        product, "/scep/servers", "web-5", challenge=bound, sans=DNS, transaction_id="tx-5b"
    )
    other_name = await enrol(product, "/scep/servers", "web-7", challenge=named, sans=DNS)
    own_name = await enrol(
        product,
        "/scep/servers",
        "web-7b",
        challenge=named,
        sans=(x509.DNSName("web-7.example.com"),),
    )

    assert late.fail_info_text == "challenge expired"
    assert stranger.fail_info_text is not None
    assert stranger.fail_info_text.startswith("challenge bound to another subject")
    assert rightful.status is PkiStatus.SUCCESS  # a refused binding spent nothing
    assert other_name.fail_info_text is not None
    assert other_name.fail_info_text.startswith("challenge bound to other names")
    assert own_name.status is PkiStatus.SUCCESS


async def test_a_request_the_profile_refuses_does_not_spend_the_challenge(
    product: RunningScepline,
):
    challenge = await one_time(product)

    refused = await enrol(
        product,
        "/scep/servers",
        "web-8",
        challenge=challenge,
        sans=(x509.DNSName("web-8.elsewhere.org"),),
    )
    kept = await enrol(product, "/scep/servers", "web-9", challenge=challenge, sans=DNS)

    assert refused.status is PkiStatus.FAILURE
    assert refused.fail_info_text is not None
    assert "the profile refuses it" in refused.fail_info_text
    assert "does not match the profile's pattern" in refused.fail_info_text
    assert kept.status is PkiStatus.SUCCESS


async def poll(product: RunningScepline, path: str, label: str, transaction_id: str) -> CertRep:
    client = at(product, path)
    await client.get_ca_certs()
    return await client.poll(requester(label), transaction_id, name(label))


async def until_final(product: RunningScepline, path: str, label: str, txid: str) -> CertRep:
    for _ in range(150):
        reply = await poll(product, path, label, txid)
        if reply.status is not PkiStatus.PENDING:
            return reply
        await asyncio.sleep(0.1)
    raise AssertionError(f"{txid} still PENDING")


async def test_a_manual_request_waits_for_an_operator_then_is_issued(
    product: RunningScepline,
):
    repository = product.embedded.repository
    first = await enrol(product, "/scep/gear", "printer-1", challenge=None)
    waiting = await repository.get("tx-printer-1|at:gear")
    polled = await poll(product, "/scep/gear", "printer-1", "tx-printer-1")

    assert first.status is PkiStatus.PENDING and polled.status is PkiStatus.PENDING
    assert waiting is not None and waiting.state is RequestState.AWAITING_APPROVAL
    listed = await repository.in_state(RequestState.AWAITING_APPROVAL, endpoint="gear")
    assert [r.transaction_id for r in listed] == ["tx-printer-1|at:gear"]

    # The operator names the client's transactionID; the command finds the request.
    assert (
        await decide(product.settings, "tx-printer-1", approve=True, by="alice", reason=None) == 0
    )
    issued = await until_final(product, "/scep/gear", "printer-1", "tx-printer-1")

    assert issued.status is PkiStatus.SUCCESS
    assert issued.certificates[0].subject == name("printer-1")
    done = await repository.get("tx-printer-1|at:gear")
    assert done is not None and done.approval is Approval.OPERATOR
    history = await repository.history("tx-printer-1|at:gear")
    assert any("approved by alice" in event.detail for event in history)


async def test_a_rejected_manual_request_is_refused_when_the_device_polls(
    product: RunningScepline,
):
    await enrol(product, "/scep/gear", "printer-2", challenge=None)

    await decide(
        product.settings,
        "tx-printer-2|at:gear",
        approve=False,
        by="bob",
        reason="not one of ours",
    )
    refused = await poll(product, "/scep/gear", "printer-2", "tx-printer-2")

    assert (refused.status, refused.fail_info) == (PkiStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert refused.fail_info_text == "not one of ours"


async def test_a_retransmitted_manual_request_is_answered_pending_at_once(
    product: RunningScepline,
):
    await enrol(product, "/scep/gear", "printer-3", challenge=None)

    started = asyncio.get_running_loop().time()
    again = await enrol(product, "/scep/gear", "printer-3", challenge=None)

    assert again.status is PkiStatus.PENDING
    assert asyncio.get_running_loop().time() - started < 2  # not SCEPLINE_SYNC_WAIT_SECONDS


async def test_one_key_enrolling_at_two_endpoints_makes_two_requests(product: RunningScepline):
    who = requester("shared-key")
    wifi = await enrol(
        product, "/scep/wifi", "shared-key", challenge="wifi-secret", transaction_id="tx-same"
    )
    vpn = await enrol(
        product,
        "/scep/vpn",
        "shared-key",
        challenge="vpn-secret",
        who=who,
        transaction_id="tx-same",
    )

    assert wifi.status is PkiStatus.SUCCESS and vpn.status is PkiStatus.SUCCESS
    assert wifi.certificates[0].serial_number != vpn.certificates[0].serial_number


async def test_a_renewal_stays_at_the_endpoint_that_issued_the_certificate(
    product: RunningScepline,
):
    old = await enrol(product, "/scep/wifi", "phone-1", challenge="wifi-secret")
    signer = Requester(key=requester("phone-1").key, certificate=old.certificates[0])
    csr = build_csr(rsa_key("phone-1-new"), name("phone-1"), challenge=None)

    here = await at(product, "/scep/wifi").enrol(csr, signer, transaction_id="tx-renew-wifi")
    there = await at(product, "/scep/servers").enrol(csr, signer, transaction_id="tx-renew-srv")
    never = await enrol(product, "/scep/vpn", "phone-1", challenge=None, who=signer)

    assert here.status is PkiStatus.SUCCESS
    assert there.status is PkiStatus.FAILURE
    assert there.fail_info_text is not None
    assert "not a renewal here: certificate" in there.fail_info_text
    assert "issued at endpoint wifi, not servers" in there.fail_info_text
    assert never.status is PkiStatus.FAILURE  # renewal = "never": a challenge is needed


async def test_an_endpoint_may_take_the_ekus_the_csr_asks_for(product: RunningScepline):
    who = requester("gw-1")
    asking = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name("gw-1"))
        .add_attribute(AttributeOID.CHALLENGE_PASSWORD, b"vpn-secret")
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, x509.ObjectIdentifier("1.3.6.1.5.5.7.3.17")]
            ),
            critical=False,
        )
        .sign(who.key, hashes.SHA256())
    )
    too_much = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name("gw-2"))
        .add_attribute(AttributeOID.CHALLENGE_PASSWORD, b"vpn-secret")
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .sign(requester("gw-2").key, hashes.SHA256())
    )

    issued = await enrol(product, "/scep/vpn", "gw-1", challenge=None, csr=asking)
    refused = await enrol(product, "/scep/vpn", "gw-2", challenge=None, csr=too_much)
    plain = await enrol(product, "/scep/vpn", "gw-3", challenge="vpn-secret")

    assert ekus(issued.certificates[0]) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        x509.ObjectIdentifier("1.3.6.1.5.5.7.3.17"),
    ]
    assert refused.status is PkiStatus.FAILURE
    assert refused.fail_info_text is not None and "code_signing" in refused.fail_info_text
    assert ekus(plain.certificates[0]) == [ExtendedKeyUsageOID.CLIENT_AUTH]


@pytest.mark.parametrize("path", ["/scep/wifi/pkiclient.exe", "/scep/wifi/cgi-bin/pkiclient.exe"])
async def test_the_windows_forms_of_a_path_are_the_endpoint(product: RunningScepline, path: str):
    label = f"win-{path.count('/')}"
    reply = await enrol(product, path, label, challenge="wifi-secret")

    assert reply.status is PkiStatus.SUCCESS
    assert lifetime(reply.certificates[0]) == dt.timedelta(days=30, minutes=5)


async def test_an_extra_path_serves_its_endpoint(product: RunningScepline):
    reply = await enrol(
        product,
        "/certsrv/mscep/mscep.dll/pkiclient.exe",
        "ndes-1",
        challenge=await one_time(product),
        sans=DNS,
    )

    assert reply.status is PkiStatus.SUCCESS
    assert lifetime(reply.certificates[0]) == dt.timedelta(days=90, minutes=5)


async def test_an_unknown_endpoint_is_404_and_operations_answer_per_endpoint(
    product: RunningScepline,
):
    unknown = await product.http.get("/scep/nope", params={"operation": "GetCACaps"})
    windows = await product.http.get("/scep/nope/pkiclient.exe", params={"operation": "GetCACaps"})
    caps = await product.http.get("/scep/gear", params={"operation": "GetCACaps"})
    metrics = (await product.health.get("/metrics")).text

    assert unknown.status_code == 404 and windows.status_code == 404
    assert "/scep/wifi" in unknown.text
    assert caps.status_code == 200 and "Renewal" in caps.text
    assert (
        'scepline_endpoint_requests_total{endpoint="gear",operation="GetCACaps",outcome="ok"}'
        in metrics
    )


async def test_unapproved_requests_expire_after_the_endpoints_time(
    tmp_path: Path, lab_ca_dir: Path
):
    config = tmp_path / "scepline.toml"
    config.write_text('[endpoints.gear]\nchallenge = "manual"\napproval_ttl_hours = 0.0003\n')
    settings = Settings(
        data_dir=data_dir_with_ca(tmp_path, lab_ca_dir),
        config=config,
        sync_wait_seconds=1,
        sweep_interval_seconds=0.2,
    )
    async with running(settings) as quick:
        await enrol(quick, "/scep/gear", "printer-9", challenge=None)
        await asyncio.sleep(1.5)  # 0.0003 h is about a second
        expired = await until_final(quick, "/scep/gear", "printer-9", "tx-printer-9")

    assert expired.status is PkiStatus.FAILURE
    assert expired.fail_info_text is not None
    assert expired.fail_info_text.startswith("not approved within")


async def test_the_signed_request_carries_no_challenge_in_the_logs(
    product: RunningScepline, capsys: pytest.CaptureFixture[str]
):
    challenge = await one_time(product)
    await enrol(product, "/scep/servers", "web-10", challenge=challenge, sans=DNS)

    captured = capsys.readouterr()
    assert challenge not in captured.out + captured.err

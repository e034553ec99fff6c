"""The Intune provider through the whole product, on both deployments.

Devices enrol over SCEP with challenges minted by the simulator; ingress and
the three workers run their real code; Intune is the simulator over HTTPS.
Each test names the row of the minimum test matrix it covers (``docs/specs/intune-api.md``,
"Minimum test matrix").
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import uuid

import pytest
from cryptography.hazmat.primitives import hashes
from pydantic import SecretStr
from structlog.testing import capture_logs

from scepline_devtools.intune_sim import GRAPH_SCOPE, INTUNE_SCOPE, Route
from scepline_devtools.scep_client import Requester, build_csr
from scepline_shared.scep import FailInfo, MessageType, PkiStatus
from scepline_shared.settings import Settings
from scepline_shared.store.models import NotifyState, RequestState
from tests.fixtures.scepline import running
from tests.intune.support import enrol, mint, success_notifications
from tests.intune_sim.fixtures import IntuneSim
from tests.support.pki import name, requester, rsa_key


async def test_happy_path_issues_and_notifies_with_one_discovery(
    deployment_settings: Settings, intune_sim: IntuneSim
):
    # Matrix 1: validate → Success → certificate; successNotification matches it;
    # one discovery and one token per scope for all devices.
    labels = [f"happy-{i}" for i in range(4)]
    async with running(deployment_settings) as product:
        replies = await asyncio.gather(
            *(enrol(product, lb, f"tx-{lb}", mint(intune_sim, lb)) for lb in labels)
        )
        repository = product.embedded.repository
        for label, rep in zip(labels, replies, strict=True):
            assert rep.status is PkiStatus.SUCCESS, label
            certificate = rep.certificates[0]
            request = await repository.get(f"tx-{label}")
            assert request is not None
            assert request.state is RequestState.ISSUED
            assert request.notify_state is NotifyState.SENT
            assert request.provider_code == "Success"
            [sent] = success_notifications(intune_sim, f"tx-{label}")
            fields = sent.fields
            assert fields["certificateThumbprint"] == (
                certificate.fingerprint(hashes.SHA1()).hex().upper()
            )
            assert fields["certificateSerialNumber"] == format(certificate.serial_number, "x")
            assert fields["certificateSerialNumber"] == request.cert_serial
            expiry = dt.datetime.fromisoformat(fields["certificateExpirationDateUtc"])
            assert fields["certificateExpirationDateUtc"].endswith("Z")
            assert expiry == certificate.not_valid_after_utc.replace(microsecond=0)
            assert fields["issuingCertificateAuthority"] == certificate.issuer.rfc4514_string()
            assert fields["certificateRequest"] == base64.b64encode(request.csr_der).decode()
    assert len(intune_sim.admin.calls(Route.GRAPH_ENDPOINTS)) == 1
    assert intune_sim.admin.token_count(INTUNE_SCOPE) == 1
    assert intune_sim.admin.token_count(GRAPH_SCOPE) == 1
    # validateRequest and successNotification carried the same CSR and transactionId.
    validated = {
        c.body["request"]["transactionId"] for c in intune_sim.admin.calls(Route.VALIDATE_REQUEST)
    }
    assert validated == {f"tx-{lb}" for lb in labels}


@pytest.mark.parametrize("broken", ["bad_secret", "missing_role"])
async def test_bad_credentials_give_no_certificate(
    deployment_settings: Settings, intune_sim: IntuneSim, broken: str
):
    # Matrix 2.
    settings = deployment_settings
    if broken == "bad_secret":
        settings = settings.model_copy(update={"intune_client_secret": SecretStr("not-the-secret")})
    else:
        app = intune_sim.state.default_app
        intune_sim.admin.register_app(app.model_copy(update={"has_role": False}))
    async with running(settings) as product:
        rep = await enrol(product, "cred", "tx-cred", mint(intune_sim, "cred"))
        request = await product.embedded.repository.get("tx-cred")
    assert rep.status is PkiStatus.FAILURE
    assert rep.fail_info is FailInfo.BAD_REQUEST
    assert request is not None and request.state is RequestState.REJECTED
    assert request.cert_serial is None
    assert "Intune configuration error" in (request.fail_reason or "")
    assert intune_sim.admin.notifications() == []


def _tampered(challenge: str) -> str:
    # Change the payload but keep the signature: decodes fine, verifies not.
    document = base64.b64decode(challenge).replace(b'"did":"', b'"did":"x')
    return base64.b64encode(document).decode()


@pytest.mark.parametrize(
    "case",
    ["missing", "tampered", "expired", "mismatched", "wrong_tenant", "replayed"],
)
async def test_a_bad_challenge_gives_no_certificate_and_the_code_is_recorded(
    deployment_settings: Settings, intune_sim: IntuneSim, case: str
):
    # Matrix 3.
    label = f"bad-{case}"
    challenge: str | None = mint(intune_sim, label)
    expected = {
        "missing": "ChallengePasswordMissing",
        "tampered": "SignatureValidationFailed",
        "expired": "ChallengeExpired",
        "mismatched": "SubjectNameMismatch",
        "wrong_tenant": "BadTenantIdInChallenge",
        "replayed": "ChallengeExpired",  # the simulator's replay_code
    }[case]
    async with running(deployment_settings) as product:
        if case == "missing":
            challenge = None
        elif case == "tampered":
            assert challenge is not None
            challenge = _tampered(challenge)
        elif case == "expired":
            intune_sim.admin.advance_clock(2 * 3600)
        elif case == "mismatched":
            challenge = mint(intune_sim, label, subject="CN=someone-else")
        elif case == "wrong_tenant":
            challenge = mint(intune_sim, label, tenant_id=str(uuid.uuid4()))
        elif case == "replayed":
            intune_sim.admin.set_knobs(replay="reject")
            first = await enrol(product, label, "tx-first-use", challenge)
            assert first.status is PkiStatus.SUCCESS
        with capture_logs() as logs:
            rep = await enrol(product, label, f"tx-{label}", challenge)
        request = await product.embedded.repository.get(f"tx-{label}")
    assert rep.status is PkiStatus.FAILURE
    assert rep.fail_info is FailInfo.BAD_REQUEST
    assert request is not None and request.state is RequestState.REJECTED
    assert request.provider_code == expected
    assert request.cert_serial is None
    assert success_notifications(intune_sim, f"tx-{label}") == []
    assert any(e.get("provider_code") == expected for e in logs), logs
    if case == "missing":  # rejected without asking Intune
        bodies = [c.body for c in intune_sim.admin.calls(Route.VALIDATE_REQUEST)]
        assert all(b["request"]["transactionId"] != f"tx-{label}" for b in bodies)


async def test_an_unknown_code_is_a_failure(deployment_settings: Settings, intune_sim: IntuneSim):
    # Matrix 4: a code outside Microsoft's enum is no less a "no".
    async with running(deployment_settings) as product:
        challenge = mint(intune_sim, "odd", force_code="SimInventedUnknownCode")
        rep = await enrol(product, "odd", "tx-odd", challenge)
        request = await product.embedded.repository.get("tx-odd")
    assert rep.status is PkiStatus.FAILURE
    assert request is not None and request.state is RequestState.REJECTED
    assert request.provider_code == "SimInventedUnknownCode"
    assert "SimInventedUnknownCode" in (request.fail_reason or "")


async def test_a_shard_move_is_rediscovered_and_enrolment_goes_on(
    deployment_settings: Settings, intune_sim: IntuneSim
):
    # Matrix 8.
    async with running(deployment_settings) as product:
        before = await enrol(product, "shard-a", "tx-shard-a", mint(intune_sim, "shard-a"))
        intune_sim.admin.move_shard("shard-2")
        after = await enrol(product, "shard-b", "tx-shard-b", mint(intune_sim, "shard-b"))
    assert before.status is PkiStatus.SUCCESS
    assert after.status is PkiStatus.SUCCESS
    assert len(intune_sim.admin.calls(Route.GRAPH_ENDPOINTS)) == 2
    statuses = [c.status for c in intune_sim.admin.calls(Route.VALIDATE_REQUEST)]
    assert statuses == [200, 404, 200]
    assert len(success_notifications(intune_sim, "tx-shard-b")) == 1


@pytest.mark.parametrize("broken", ["graph_403", "missing_entry"])
async def test_discovery_failure_is_a_configuration_error_and_fails_closed(
    deployment_settings: Settings, intune_sim: IntuneSim, broken: str
):
    # Matrix 9.
    if broken == "graph_403":
        app = intune_sim.state.default_app
        intune_sim.admin.register_app(app.model_copy(update={"graph_permission": False}))
    else:
        intune_sim.admin.set_knobs(omit_scep_endpoint=True)
    async with running(deployment_settings) as product:
        rep = await enrol(product, "disc", "tx-disc", mint(intune_sim, "disc"))
        request = await product.embedded.repository.get("tx-disc")
    assert rep.status is PkiStatus.FAILURE
    assert request is not None and request.state is RequestState.REJECTED
    reason = request.fail_reason or ""
    assert reason.startswith("Intune configuration error")
    assert ("Application.Read.All" if broken == "graph_403" else "ScepRequestValidation") in reason
    assert intune_sim.admin.calls(Route.VALIDATE_REQUEST) == []


async def test_renewals_are_validated_by_intune_too(
    deployment_settings: Settings, intune_sim: IntuneSim
):
    async with running(deployment_settings) as product:
        first = await enrol(product, "renew", "tx-renew-1", mint(intune_sim, "renew"))
        assert first.status is PkiStatus.SUCCESS
        signer = Requester(key=requester("renew").key, certificate=first.certificates[0])

        async def renew(transaction_id: str, challenge: str, key_label: str):  # type: ignore[no-untyped-def]
            csr = build_csr(rsa_key(key_label), name("renew"), challenge=challenge)
            return await product.client.enrol(
                csr, signer, transaction_id=transaction_id, message_type=MessageType.RENEWAL_REQ
            )

        # Signed with a valid certificate of ours, but Intune says no: no certificate.
        refused = await renew("tx-renew-2", mint(intune_sim, "renew", subject="CN=x"), "k2")
        renewed = await renew("tx-renew-3", mint(intune_sim, "renew"), "k3")
    assert refused.status is PkiStatus.FAILURE
    assert renewed.status is PkiStatus.SUCCESS
    assert renewed.certificates[0].public_key() == rsa_key("k3").public_key()
    # Intune saw the client's transactionID, without the store's renewal suffix.
    validated = [
        c.body["request"]["transactionId"] for c in intune_sim.admin.calls(Route.VALIDATE_REQUEST)
    ]
    assert validated == ["tx-renew-1", "tx-renew-2", "tx-renew-3"]
    assert len(success_notifications(intune_sim, "tx-renew-3")) == 1

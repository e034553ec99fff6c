"""The Intune client against the simulator: real HTTPS, real MSAL, no doubles.

Each test names the behaviour it pins (``docs/specs/intune-api.md``, from
"Authentication" to "Timeouts, retries and throttling"; "Minimum test matrix"
rows 1-2 and 7-9 at the client level; ``test_end_to_end.py`` runs the rows
through the product).
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from structlog.testing import capture_logs

from scepline_devtools.intune_sim import GRAPH_SCOPE, INTUNE_SCOPE, Route
from scepline_shared.intune import (
    CertificateCredential,
    IntuneConfigurationError,
    IntuneUnavailable,
)
from scepline_shared.metrics import INTUNE_LATENCY
from tests.intune.support import intune_client
from tests.intune_sim.fixtures import IntuneSim
from tests.intune_sim.helpers import certificate_credential, csr


def device_csr(sim: IntuneSim, subject: str = "CN=device-1", **spec: Any) -> bytes:
    minted = sim.admin.mint_challenge(subject=subject, **spec)
    return base64.b64decode(csr(challenge=minted.challenge, subject=subject))


def calls(sim: IntuneSim, route: Route) -> int:
    return len(sim.admin.calls(route))


async def test_validate_caches_one_token_per_scope_and_one_discovery(intune_sim: IntuneSim):
    # Matrix 1: N requests, one discovery; MSAL's cache serves every later token.
    async with intune_client(intune_sim) as client:
        first = await asyncio.gather(
            *(
                client.validate_request(transaction_id=f"tx-{i}", csr_der=device_csr(intune_sim))
                for i in range(5)
            )
        )
        later = [
            await client.validate_request(transaction_id=f"tx-{i}", csr_der=device_csr(intune_sim))
            for i in range(5, 8)
        ]
    assert all(result.ok for result in first + later)
    assert intune_sim.admin.token_count(INTUNE_SCOPE) == 1
    assert intune_sim.admin.token_count(GRAPH_SCOPE) == 1
    assert calls(intune_sim, Route.GRAPH_ENDPOINTS) == 1
    assert calls(intune_sim, Route.VALIDATE_REQUEST) == 8


async def test_requests_carry_the_documented_headers_and_body(intune_sim: IntuneSim):
    der = device_csr(intune_sim)
    async with intune_client(intune_sim) as client:
        await client.validate_request(transaction_id="tx-headers", csr_der=der)
        await client.validate_request(transaction_id="tx-headers", csr_der=der)
    token_call = intune_sim.admin.calls(Route.TOKEN)
    # The double slash: resource URI "https://api.manage.microsoft.com/" + "/.default".
    assert {c.body["scope"] for c in token_call} == {INTUNE_SCOPE, GRAPH_SCOPE}
    recorded = intune_sim.admin.calls(Route.VALIDATE_REQUEST)
    request_ids = set()
    for call in recorded:
        assert call.headers["api-version"] == "2018-02-20"
        assert call.headers["useragent"] == "scepline-tests/1.0"
        assert call.headers["authorization"].startswith("Bearer ")
        request_ids.add(str(uuid.UUID(call.headers["client-request-id"])))
        assert call.body == {
            "request": {
                "transactionId": "tx-headers",
                "certificateRequest": base64.b64encode(der).decode(),
                "callerInfo": "scepline-tests/1.0",
            }
        }
    assert len(request_ids) == 2  # a new activity id per HTTP call


async def test_a_rejection_is_a_result_with_the_code_not_an_error(intune_sim: IntuneSim):
    challenge = intune_sim.admin.mint_challenge(subject="CN=other").challenge
    mismatched = base64.b64decode(csr(challenge=challenge, subject="CN=device-1"))
    async with intune_client(intune_sim) as client:
        result = await client.validate_request(transaction_id="b", csr_der=mismatched)
    assert not result.ok
    assert result.code == "SubjectNameMismatch"
    assert result.error_description


async def test_429_retry_after_is_respected(intune_sim: IntuneSim):
    # Matrix 7: throttled, then answered within the budget.
    intune_sim.admin.add_fault(Route.VALIDATE_REQUEST, "throttle", retry_after=1)
    async with intune_client(intune_sim) as client:
        await client.validate_request(transaction_id="warm", csr_der=device_csr(intune_sim))
        intune_sim.admin.add_fault(Route.VALIDATE_REQUEST, "throttle", retry_after=1)
        started = time.monotonic()
        result = await client.validate_request(transaction_id="t", csr_der=device_csr(intune_sim))
        elapsed = time.monotonic() - started
    assert result.ok
    assert elapsed >= 1.0
    recorded = intune_sim.admin.calls(Route.VALIDATE_REQUEST)[-2:]
    assert [c.status for c in recorded] == [429, 200]
    assert (recorded[1].at - recorded[0].at).total_seconds() >= 1.0


async def test_a_retry_after_beyond_the_budget_gives_up_at_once(intune_sim: IntuneSim):
    intune_sim.admin.add_fault(Route.VALIDATE_REQUEST, "throttle", retry_after=30)
    async with intune_client(intune_sim, retry_budget_seconds=2) as client:
        started = time.monotonic()
        with pytest.raises(IntuneUnavailable) as raised:
            await client.validate_request(transaction_id="t", csr_der=device_csr(intune_sim))
    assert time.monotonic() - started < 2
    assert raised.value.retry_after == 30  # for the worker to defer the request by


@pytest.mark.parametrize(
    "kind", ["internal_error", "unavailable", "bad_gateway_html", "bad_gateway_empty"]
)
async def test_5xx_is_retried_within_the_budget_then_unavailable(intune_sim: IntuneSim, kind: str):
    # Matrix 7: bounded retry, then a typed transient error (fail closed).
    intune_sim.admin.add_fault(Route.VALIDATE_REQUEST, kind, count=100, retry_after=0)
    async with intune_client(intune_sim, retry_budget_seconds=3, max_attempts=3) as client:
        started = time.monotonic()
        with pytest.raises(IntuneUnavailable):
            await client.validate_request(transaction_id="t", csr_der=device_csr(intune_sim))
        assert time.monotonic() - started < 3 + 5
        assert calls(intune_sim, Route.VALIDATE_REQUEST) == 3
        # Graph was asked again (the shard may have moved) but named the same URI.
        assert calls(intune_sim, Route.GRAPH_ENDPOINTS) == 2
        intune_sim.admin.clear_faults()
        result = await client.validate_request(transaction_id="t", csr_der=device_csr(intune_sim))
    assert result.ok


async def test_a_passing_5xx_or_reset_is_absorbed_by_a_retry(intune_sim: IntuneSim):
    intune_sim.admin.add_fault(Route.VALIDATE_REQUEST, "internal_error")
    intune_sim.admin.add_fault(Route.VALIDATE_REQUEST, "reset")
    async with intune_client(intune_sim) as client:
        result = await client.validate_request(transaction_id="t", csr_der=device_csr(intune_sim))
    assert result.ok
    assert [c.fault for c in intune_sim.admin.calls(Route.VALIDATE_REQUEST)] == [
        "internal_error",
        "reset",
        None,
    ]


async def test_a_shard_move_is_rediscovered_once(intune_sim: IntuneSim):
    # Matrix 8: the old URI answers 404; one rediscovery, then success.
    async with intune_client(intune_sim) as client:
        assert (
            await client.validate_request(transaction_id="a", csr_der=device_csr(intune_sim))
        ).ok
        intune_sim.admin.move_shard("shard-2")
        result = await client.validate_request(transaction_id="b", csr_der=device_csr(intune_sim))
        assert (
            await client.validate_request(transaction_id="c", csr_der=device_csr(intune_sim))
        ).ok
    assert result.ok
    statuses = [c.status for c in intune_sim.admin.calls(Route.VALIDATE_REQUEST)]
    assert statuses == [200, 404, 200, 200]
    assert calls(intune_sim, Route.GRAPH_ENDPOINTS) == 2


async def test_a_stale_duplicate_endpoint_is_skipped_after_one_failure(intune_sim: IntuneSim):
    intune_sim.admin.set_knobs(duplicate_endpoints="stale_first")
    async with intune_client(intune_sim) as client:
        for name in ("a", "b"):
            result = await client.validate_request(
                transaction_id=name, csr_der=device_csr(intune_sim)
            )
            assert result.ok
    statuses = [c.status for c in intune_sim.admin.calls(Route.VALIDATE_REQUEST)]
    assert statuses == [404, 200, 200]


async def test_discovery_403_is_a_configuration_error(intune_sim: IntuneSim):
    # Matrix 9: missing Graph Application.Read.All.
    app = intune_sim.state.default_app
    intune_sim.admin.register_app(app.model_copy(update={"graph_permission": False}))
    async with intune_client(intune_sim) as client:
        with pytest.raises(IntuneConfigurationError, match=r"Application\.Read\.All"):
            await client.validate_request(transaction_id="t", csr_der=device_csr(intune_sim))
    assert calls(intune_sim, Route.VALIDATE_REQUEST) == 0


async def test_a_missing_scep_endpoint_is_a_configuration_error(intune_sim: IntuneSim):
    # Matrix 9: Graph lists no ScepRequestValidationFEService (only look-alikes).
    intune_sim.admin.set_knobs(omit_scep_endpoint=True)
    async with intune_client(intune_sim) as client:
        with pytest.raises(IntuneConfigurationError, match="ScepRequestValidationFEService"):
            await client.validate_request(transaction_id="t", csr_der=device_csr(intune_sim))
        # Fixed by the admin: the next call looks again instead of trusting the cache.
        intune_sim.admin.set_knobs(omit_scep_endpoint=False)
        result = await client.validate_request(transaction_id="t", csr_der=device_csr(intune_sim))
    assert result.ok


async def test_a_bad_secret_is_a_configuration_error_and_is_never_logged(intune_sim: IntuneSim):
    # Matrix 2.
    wrong = "wrong-" + uuid.uuid4().hex
    with capture_logs() as logs:
        async with intune_client(intune_sim, client_secret=wrong) as client:
            with pytest.raises(IntuneConfigurationError, match="invalid_client"):
                await client.validate_request(transaction_id="t", csr_der=device_csr(intune_sim))
    assert calls(intune_sim, Route.VALIDATE_REQUEST) == 0
    assert wrong not in repr(logs)
    assert intune_sim.client_secret not in repr(logs)


async def test_a_missing_app_role_is_a_configuration_error_after_one_fresh_token(
    intune_sim: IntuneSim,
):
    # Matrix 2: the token lacks scep_challenge_provider; 401 twice, no success.
    app = intune_sim.state.default_app
    intune_sim.admin.register_app(app.model_copy(update={"has_role": False}))
    async with intune_client(intune_sim) as client:
        with pytest.raises(IntuneConfigurationError, match="scep_challenge_provider"):
            await client.validate_request(transaction_id="t", csr_der=device_csr(intune_sim))
    assert [c.status for c in intune_sim.admin.calls(Route.VALIDATE_REQUEST)] == [401, 401]
    assert intune_sim.admin.token_count(INTUNE_SCOPE) == 2


async def test_an_expired_token_is_replaced_once(intune_sim: IntuneSim):
    async with intune_client(intune_sim) as client:
        assert (
            await client.validate_request(transaction_id="a", csr_der=device_csr(intune_sim))
        ).ok
        intune_sim.admin.expire_tokens()
        assert (
            await client.validate_request(transaction_id="b", csr_der=device_csr(intune_sim))
        ).ok
    assert [c.status for c in intune_sim.admin.calls(Route.VALIDATE_REQUEST)] == [200, 401, 200]
    assert intune_sim.admin.token_count(INTUNE_SCOPE) == 2


async def test_a_client_certificate_works_instead_of_a_secret(intune_sim: IntuneSim):
    from scepline_devtools.intune_sim import AppRegistration

    key_pem, cert_pem, _ = certificate_credential("scepline-cert-app")
    app_id = str(uuid.uuid4())
    intune_sim.admin.register_app(AppRegistration(client_id=app_id, certificate_pem=cert_pem))
    credential = CertificateCredential(certificate_pem=cert_pem, private_key_pem=key_pem)
    async with intune_client(
        intune_sim, client_id=app_id, client_secret=None, client_certificate=credential
    ) as client:
        result = await client.validate_request(transaction_id="t", csr_der=device_csr(intune_sim))
    assert result.ok
    assert "client_assertion" in intune_sim.admin.calls(Route.TOKEN)[0].body
    assert key_pem not in repr(credential)


async def test_notifications_use_the_documented_formats(intune_sim: IntuneSim):
    der = device_csr(intune_sim)
    _, _, certificate = certificate_credential("issued")
    async with intune_client(intune_sim) as client:
        assert (await client.validate_request(transaction_id="tx-n", csr_der=der)).ok
        success = await client.success_notification(
            transaction_id="tx-n", csr_der=der, certificate=certificate
        )
        failure = await client.failure_notification(
            transaction_id="tx-n", csr_der=der, hresult=-2147418113, error_description="x" * 400
        )
    assert success.ok and failure.ok
    sent, failed = intune_sim.admin.notifications()
    expected_thumbprint = certificate.fingerprint(hashes.SHA1()).hex().upper()
    assert sent.fields["certificateThumbprint"] == expected_thumbprint
    assert sent.fields["certificateSerialNumber"] == format(certificate.serial_number, "x")
    assert sent.fields["certificateExpirationDateUtc"] == (
        certificate.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    assert sent.fields["issuingCertificateAuthority"] == certificate.issuer.rfc4514_string()
    assert sent.fields["certificateRequest"] == base64.b64encode(der).decode()
    assert failed.fields["hResult"] == -2147418113
    assert failed.fields["errorDescription"] == "x" * 255


async def test_latency_is_observed_per_call_and_outcome(intune_sim: IntuneSim):
    before = _samples("validateRequest", "success")
    async with intune_client(intune_sim) as client:
        await client.validate_request(transaction_id="t", csr_der=device_csr(intune_sim))
    assert _samples("validateRequest", "success") == before + 1


def _samples(call: str, outcome: str) -> float:
    for metric in INTUNE_LATENCY.collect():
        for sample in metric.samples:
            if (
                sample.name.endswith("_count")
                and sample.labels.get("call") == call
                and sample.labels.get("outcome") == outcome
            ):
                return sample.value
    return 0.0

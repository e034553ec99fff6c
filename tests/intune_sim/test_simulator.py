"""The Intune simulator, end to end: what a real client sees.

Real MSAL (secret and certificate) over HTTPS trusting only the simulator's CA,
Graph discovery, one validate/notify/revoke round trip, and the admin API.
Details of each part are specified in the other test modules of this package.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes

from scepline_devtools.intune_sim import (
    GRAPH_SCOPE,
    INTUNE_SCOPE,
    AppRegistration,
    Route,
    RunningSimulator,
    SimulatorAdmin,
)
from scepline_devtools.intune_sim.jws import parse
from tests.intune_sim.fixtures import IntuneSim
from tests.intune_sim.helpers import Caller, certificate_credential, csr, success_notification


def test_msal_with_a_secret_gets_an_intune_token_and_then_serves_it_from_its_cache(
    intune_sim: IntuneSim,
) -> None:
    app = intune_sim.msal_app()

    first = app.acquire_token_for_client([INTUNE_SCOPE])
    second = app.acquire_token_for_client([INTUNE_SCOPE])

    assert first["token_type"] == "Bearer" and first["expires_in"] == 3599
    assert first["token_source"] == "identity_provider"
    assert second["token_source"] == "cache"
    assert intune_sim.admin.token_count(INTUNE_SCOPE) == 1
    claims = parse(first["access_token"]).claims
    assert claims["aud"] == "https://api.manage.microsoft.com/"
    assert claims["roles"] == ["scep_challenge_provider"]
    assert (claims["tid"], claims["appid"]) == (intune_sim.tenant_id, intune_sim.client_id)
    # MSAL with instance_discovery=False: OIDC discovery once, then the token endpoint.
    assert [c.route for c in intune_sim.admin.calls()] == [
        Route.OPENID_CONFIGURATION,
        Route.TOKEN,
    ]
    token_call = intune_sim.admin.calls(Route.TOKEN)[0]
    assert token_call.body["scope"] == INTUNE_SCOPE
    assert token_call.body["grant_type"] == "client_credentials"
    assert token_call.headers["client-request-id"]


def test_msal_asks_once_per_scope_and_a_graph_token_carries_application_read_all(
    intune_sim: IntuneSim,
) -> None:
    app = intune_sim.msal_app()
    graph = app.acquire_token_for_client([GRAPH_SCOPE])
    app.acquire_token_for_client([INTUNE_SCOPE])
    app.acquire_token_for_client([GRAPH_SCOPE])

    assert parse(graph["access_token"]).claims["roles"] == ["Application.Read.All"]
    assert intune_sim.admin.counters()["tokens"] == {GRAPH_SCOPE: 1, INTUNE_SCOPE: 1}


def test_msal_authority_may_name_the_tenant_by_domain(intune_sim: IntuneSim) -> None:
    domain_app = intune_sim.msal_app(authority=f"{intune_sim.base_url}/{intune_sim.tenant_domain}")
    assert "access_token" in domain_app.acquire_token_for_client([INTUNE_SCOPE])
    # Entra names the tenant GUID in the token endpoint it advertises.
    assert domain_app.authority.token_endpoint.startswith(intune_sim.authority)


def test_msal_with_instance_discovery_pointed_at_the_simulator(intune_sim: IntuneSim) -> None:
    app = intune_sim.msal_app(instance_discovery=f"{intune_sim.base_url}/common/discovery/instance")
    assert "access_token" in app.acquire_token_for_client([INTUNE_SCOPE])
    assert len(intune_sim.admin.calls(Route.INSTANCE_DISCOVERY)) == 1


def test_msal_with_a_bad_secret_gets_aadsts7000215(intune_sim: IntuneSim) -> None:
    result = intune_sim.msal_app("not-the-secret").acquire_token_for_client([INTUNE_SCOPE])
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]
    assert result["error_description"].startswith("AADSTS7000215:")
    assert intune_sim.admin.calls(Route.TOKEN)[0].status == 401


@pytest.mark.parametrize(
    ("credential_form", "alg", "thumbprint_header"),
    [("thumbprint", "RS256", "x5t"), ("public_certificate", "PS256", "x5t#S256")],
)
def test_msal_with_a_certificate_signs_an_assertion_the_simulator_verifies(
    intune_sim: IntuneSim, credential_form: str, alg: str, thumbprint_header: str
) -> None:
    key_pem, cert_pem, certificate = certificate_credential("msal-cert-app")
    intune_sim.admin.register_app(AppRegistration(client_id="cert-app", certificate_pem=cert_pem))
    credential = {"private_key": key_pem}
    if credential_form == "thumbprint":
        credential["thumbprint"] = certificate.fingerprint(hashes.SHA1()).hex()
    else:
        credential["public_certificate"] = cert_pem

    result = intune_sim.msal_app(credential, client_id="cert-app").acquire_token_for_client(
        [INTUNE_SCOPE]
    )

    assert "access_token" in result, result
    assert parse(result["access_token"]).claims["appidacr"] == "2"
    body = intune_sim.admin.calls(Route.TOKEN)[0].body
    assertion = parse(body["client_assertion"])
    assert assertion.header["alg"] == alg and thumbprint_header in assertion.header
    assert assertion.claims["aud"] == f"{intune_sim.authority}/oauth2/v2.0/token"
    assert "client_secret" not in body


def test_a_certificate_the_app_does_not_have_is_refused(intune_sim: IntuneSim) -> None:
    _, registered_pem, _ = certificate_credential("registered")
    other_key_pem, _, other = certificate_credential("other")
    intune_sim.admin.register_app(
        AppRegistration(client_id="cert-app", certificate_pem=registered_pem)
    )
    credential = {
        "private_key": other_key_pem,
        "thumbprint": other.fingerprint(hashes.SHA1()).hex(),
    }
    result = intune_sim.msal_app(credential, client_id="cert-app").acquire_token_for_client(
        [INTUNE_SCOPE]
    )
    assert result["error"] == "invalid_client" and result["error_codes"] == [700027]


def test_one_enrolment_round_trip(intune_sim: IntuneSim, caller: Caller) -> None:
    challenge = intune_sim.admin.mint_challenge(subject="CN=device-1")
    request = csr(challenge=challenge.challenge, subject="CN=device-1")

    verdict = caller.validate(request, transaction_id="tx-42")
    notified = caller.scep("successNotification", success_notification("tx-42", request))
    queued = intune_sim.admin.queue_revocations(transaction_id="tx-42").queued
    download = caller.pki(
        "downloadRevocationRequests",
        {"downloadParameters": {"maxRequests": 10, "issuerName": None}},
    )
    upload = caller.pki(
        "uploadRevocationResults",
        {
            "results": [
                {
                    "requestContext": queued[0].request_context,
                    "succeeded": True,
                    "errorCode": "0",
                    "errorMessage": None,
                }
            ]
        },
    )

    assert verdict["code"] == "Success" and verdict["errorDescription"] == ""
    assert notified.json()["code"] == "Success"
    assert [r["serialNumber"] for r in download.json()["value"]] == ["1a2b3c"]
    assert upload.json() == {"value": True}
    assert intune_sim.admin.revocations()["results"][0]["succeeded"] is True


async def test_the_admin_client_has_an_async_twin(intune_sim: IntuneSim) -> None:
    async with intune_sim.admin.aio as admin:
        minted = await admin.mint_challenge(subject="CN=x")
        await admin.untarget(minted.id)
        await admin.add_fault(Route.TOKEN, "throttle")
        assert await admin.calls() == []  # admin calls are not recorded
        state = await admin.state()
    assert state["tenant_id"] == intune_sim.tenant_id
    assert state["faults"][0]["kind"] == "throttle"


def test_https_is_trusted_only_through_the_simulator_ca(intune_sim: IntuneSim) -> None:
    assert intune_sim.ca_bundle.name == "sim-ca.pem"
    with pytest.raises(httpx.ConnectError), httpx.Client(trust_env=False) as untrusting:
        untrusting.get(f"{intune_sim.base_url}/_sim/state")


def test_plain_http_when_tls_is_off(tmp_path: Path) -> None:
    with RunningSimulator(data_dir=tmp_path, tls=False) as sim:
        assert sim.base_url.startswith("http://") and sim.ca_bundle is None
        with SimulatorAdmin(sim.base_url) as admin:
            assert admin.state()["tenant_id"] == sim.state.tenant_id
    assert not (tmp_path / "sim-ca.pem").exists()


def test_the_simulator_refuses_to_listen_beyond_loopback(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        RunningSimulator(data_dir=tmp_path, host="0.0.0.0")

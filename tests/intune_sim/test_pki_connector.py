"""PkiConnectorFEService: revocation requests out, revocation results in
(docs/specs/intune-api.md, "Revocation requests")."""

from __future__ import annotations

from typing import Any

import pytest

from scepline_devtools.intune_sim import FaultKind, Route
from tests.intune_sim.fixtures import IntuneSim
from tests.intune_sim.helpers import Caller, csr, success_notification


def _download(caller: Caller, max_requests: Any = 10, issuer: str | None = None) -> Any:
    body = {"downloadParameters": {"maxRequests": max_requests, "issuerName": issuer}}
    return caller.pki("downloadRevocationRequests", body)


def _result(context: str, error_code: Any = "0", succeeded: bool = True) -> dict[str, Any]:
    return {
        "requestContext": context,
        "succeeded": succeeded,
        "errorCode": error_code,
        "errorMessage": None if succeeded else "not found",
    }


@pytest.fixture
def issued(intune_sim: IntuneSim, caller: Caller) -> list[str]:
    """Two certificates announced by success notifications; returns their serials."""
    for transaction, serial, issuer in (("tx-1", "0a", "CN=CA one"), ("tx-2", "0b", "CN=CA two")):
        request = csr(challenge=intune_sim.admin.mint_challenge().challenge)
        caller.validate(request, transaction)
        body = success_notification(
            transaction,
            request,
            certificateSerialNumber=serial,
            issuingCertificateAuthority=issuer,
            caConfiguration=None,
        )
        assert caller.scep("successNotification", body).json()["code"] == "Success"
    return ["0a", "0b"]


def test_nothing_to_revoke_at_first(caller: Caller) -> None:
    response = _download(caller)
    assert response.status_code == 200
    assert response.json()["value"] == []
    assert response.json()["@odata.context"].endswith(
        "#Collection(microsoft.management.services.api.caRevocationRequest)"
    )


def test_revocations_are_seeded_from_success_notifications(
    intune_sim: IntuneSim, caller: Caller, issued: list[str]
) -> None:
    queued = intune_sim.admin.queue_revocations(all_issued=True).queued
    value = _download(caller).json()["value"]
    assert [v["serialNumber"] for v in value] == issued
    assert value[0] == {
        "requestContext": queued[0].request_context,
        "serialNumber": "0a",
        "issuerName": "CN=CA one",
        "caConfiguration": "CN=CA one",  # echoed from the notification (assumed)
    }


def test_issuer_name_filters_and_max_requests_limits(
    intune_sim: IntuneSim, caller: Caller, issued: list[str]
) -> None:
    intune_sim.admin.queue_revocations(all_issued=True)
    assert [v["serialNumber"] for v in _download(caller, issuer="cn=ca two").json()["value"]] == [
        "0b"
    ]
    assert len(_download(caller, max_requests=1).json()["value"]) == 1
    # Still pending: nothing was uploaded, so the next download repeats them.
    assert len(_download(caller).json()["value"]) == 2


@pytest.mark.parametrize("max_requests", [0, 501, -1, "10", None])
def test_max_requests_must_be_1_to_500(caller: Caller, max_requests: Any) -> None:
    assert _download(caller, max_requests=max_requests).status_code == 400


def test_an_explicit_revocation_needs_no_notification(
    intune_sim: IntuneSim, caller: Caller
) -> None:
    intune_sim.admin.queue_revocations(serial_number="ff", issuer_name="CN=Elsewhere")
    assert _download(caller).json()["value"][0]["issuerName"] == "CN=Elsewhere"


@pytest.mark.parametrize(
    ("error_code", "number"),
    [("0", 0), ("4004", 4004), ("CertificateNotFound", 4004), (4005, 4005)],
)
def test_results_accept_numeric_strings_and_enum_names(
    intune_sim: IntuneSim, caller: Caller, issued: list[str], error_code: Any, number: int
) -> None:
    [queued] = intune_sim.admin.queue_revocations(transaction_id="tx-1").queued
    response = caller.pki(
        "uploadRevocationResults",
        {"results": [_result(queued.request_context, error_code, succeeded=number == 0)]},
    )
    assert response.json() == {"value": True}
    [result] = intune_sim.admin.revocations()["results"]
    assert (result["error_code"], result["known"]) == (number, True)
    assert _download(caller).json()["value"] == []


@pytest.mark.parametrize("error_code", ["Oops", "9999", None, True])
def test_an_unknown_error_code_is_400(
    intune_sim: IntuneSim, caller: Caller, issued: list[str], error_code: Any
) -> None:
    [queued] = intune_sim.admin.queue_revocations(transaction_id="tx-1").queued
    body = {"results": [_result(queued.request_context, error_code)]}
    assert caller.pki("uploadRevocationResults", body).status_code == 400


@pytest.mark.parametrize(
    ("policy", "status", "value"),
    [("accept", 200, True), ("value_false", 200, False), ("bad_request", 400, None)],
)
def test_an_unknown_request_context_is_configurable(
    intune_sim: IntuneSim, caller: Caller, policy: str, status: int, value: bool | None
) -> None:
    intune_sim.admin.set_knobs(unknown_request_context=policy)
    response = caller.pki("uploadRevocationResults", {"results": [_result("no-such-context")]})
    assert response.status_code == status
    if value is not None:
        assert response.json() == {"value": value}


def test_a_false_value_fault(intune_sim: IntuneSim, caller: Caller) -> None:
    intune_sim.admin.add_fault(Route.UPLOAD_REVOCATION_RESULTS, FaultKind.FALSE_VALUE)
    response = caller.pki("uploadRevocationResults", {"results": []})
    assert response.json() == {"value": False}


def test_the_connector_wants_its_own_api_version_and_the_role(
    intune_sim: IntuneSim, caller: Caller
) -> None:
    body = {"downloadParameters": {"maxRequests": 1, "issuerName": None}}
    assert (
        caller.pki("downloadRevocationRequests", body, api_version="2018-02-20").status_code == 400
    )
    assert caller.pki("downloadRevocationRequests", body, api_version=None).status_code == 400
    app = intune_sim.state.default_app
    intune_sim.admin.register_app(app.model_copy(update={"has_role": False}))
    assert caller.pki("downloadRevocationRequests", body).status_code == 401
    intune_sim.admin.set_knobs(pki_requires_role=False)
    assert caller.pki("downloadRevocationRequests", body).status_code == 200

"""successNotification and failureNotification: recorded field by field."""

from __future__ import annotations

import pytest

from scepline_devtools.intune_sim import Route
from tests.intune_sim.fixtures import IntuneSim
from tests.intune_sim.helpers import Caller, csr, failure_notification, success_notification


@pytest.fixture
def validated(intune_sim: IntuneSim, caller: Caller) -> str:
    """A CSR that passed validateRequest as transaction tx-1."""
    request = csr(challenge=intune_sim.admin.mint_challenge().challenge)
    assert caller.validate(request, "tx-1")["code"] == "Success"
    return request


def test_a_success_notification_is_recorded_with_every_field(
    intune_sim: IntuneSim, caller: Caller, validated: str
) -> None:
    body = success_notification("tx-1", validated)
    response = caller.scep("successNotification", body, UserAgent="ejbca/9")

    assert response.json()["code"] == "Success"
    assert response.json()["errorDescription"] == ""
    [recorded] = intune_sim.admin.notifications("success")
    assert recorded.fields == body["notification"]
    call = intune_sim.admin.calls(Route.SUCCESS_NOTIFICATION)[0]
    assert call.headers["useragent"] == "ejbca/9"  # the Java lib's hyphenless header
    assert call.headers["user-agent"].startswith("python-httpx/")
    assert call.headers["api-version"] == "2018-02-20" and call.headers["client-request-id"]
    assert call.body == body and call.response == response.json()


@pytest.mark.parametrize("mode", ["omitted", "null"])
def test_ca_configuration_and_certificate_authority_are_optional(
    caller: Caller, validated: str, mode: str
) -> None:
    body = success_notification("tx-1", validated)
    for name in ("caConfiguration", "certificateAuthority"):
        if mode == "omitted":
            del body["notification"][name]
        else:
            body["notification"][name] = None
    assert caller.scep("successNotification", body).json()["code"] == "Success"


def test_a_failure_notification_is_recorded(
    intune_sim: IntuneSim, caller: Caller, validated: str
) -> None:
    body = failure_notification("tx-1", validated, hResult=0x20000105)
    assert caller.scep("failureNotification", body).json()["code"] == "Success"
    [recorded] = intune_sim.admin.notifications("failure")
    assert recorded.fields["hResult"] == 0x20000105
    assert recorded.fields["errorDescription"] == "signing failed"


@pytest.mark.parametrize("h_result", [-2147418113, 2147549183, 2**63 - 1, -(2**63)])
def test_any_int64_hresult_is_accepted(caller: Caller, validated: str, h_result: int) -> None:
    body = failure_notification("tx-1", validated, hResult=h_result)
    assert caller.scep("failureNotification", body).status_code == 200


@pytest.mark.parametrize("h_result", ["0x8000FFFF", True, 2**63, 1.5, None])
def test_a_non_integer_hresult_is_400(caller: Caller, validated: str, h_result: object) -> None:
    body = failure_notification("tx-1", validated, hResult=h_result)
    assert caller.scep("failureNotification", body).status_code == 400


def test_error_description_is_at_most_255_characters(caller: Caller, validated: str) -> None:
    fits = failure_notification("tx-1", validated, errorDescription="x" * 255)
    too_long = failure_notification("tx-1", validated, errorDescription="x" * 256)
    assert caller.scep("failureNotification", fits).status_code == 200
    response = caller.scep("failureNotification", too_long)
    assert response.status_code == 400
    assert "255" in response.json()["error"]["message"]


@pytest.mark.parametrize("action", ["successNotification", "failureNotification"])
def test_the_wrapper_is_notification_not_request(
    caller: Caller, validated: str, action: str
) -> None:
    body = success_notification("tx-1", validated)
    if action == "failureNotification":
        body = failure_notification("tx-1", validated)
    assert caller.scep(action, {"request": body["notification"]}).status_code == 400
    del body["notification"]["callerInfo"]
    assert caller.scep(action, body).status_code == 400


def test_unknown_transactions_are_accepted_by_default(
    intune_sim: IntuneSim, caller: Caller
) -> None:
    body = success_notification("never-validated", csr(challenge="x"))
    assert caller.scep("successNotification", body).json()["code"] == "Success"
    assert intune_sim.admin.notifications()[0].code == "Success"


def test_strict_mode_wants_a_prior_successful_validate_of_the_same_csr(
    intune_sim: IntuneSim, caller: Caller, validated: str
) -> None:
    intune_sim.admin.set_knobs(unknown_transaction="strict")
    known = caller.scep("successNotification", success_notification("tx-1", validated))
    unknown = caller.scep("successNotification", success_notification("tx-2", validated))
    other_csr = caller.scep(
        "failureNotification", failure_notification("tx-1", csr(challenge="other"))
    )
    assert known.json()["code"] == "Success"
    assert unknown.json()["code"] == "BadCertificateRequestIdInChallenge"
    assert other_csr.json()["code"] == "BadCertificateRequestIdInChallenge"
    assert "tx-2" in unknown.json()["errorDescription"]


def test_a_failed_validate_does_not_make_a_transaction_known(
    intune_sim: IntuneSim, caller: Caller
) -> None:
    intune_sim.admin.set_knobs(unknown_transaction="strict")
    request = csr(challenge=None)
    assert caller.validate(request, "tx-9")["code"] == "ChallengePasswordMissing"
    body = success_notification("tx-9", request)
    assert caller.scep("successNotification", body).json()["code"] != "Success"

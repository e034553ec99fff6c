"""Fault injection: each kind, by count or probability, on any route."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from scepline_devtools.intune_sim import GRAPH_SCOPE, INTUNE_SCOPE, FaultKind, Route
from tests.intune_sim.fixtures import IntuneSim
from tests.intune_sim.helpers import Caller, csr, success_notification


@pytest.fixture
def request_body(intune_sim: IntuneSim) -> dict[str, object]:
    challenge = intune_sim.admin.mint_challenge().challenge
    return {
        "request": {
            "transactionId": "tx-1",
            "certificateRequest": csr(challenge=challenge),
            "callerInfo": "tests",
        }
    }


def _validate(caller: Caller, body: dict[str, object], **options: object) -> httpx.Response:
    return caller.scep("validateRequest", body, **options)


def test_throttle_is_429_with_retry_after_then_clears(
    intune_sim: IntuneSim, caller: Caller, request_body: dict[str, object]
) -> None:
    intune_sim.admin.add_fault(Route.VALIDATE_REQUEST, FaultKind.THROTTLE, retry_after=7)
    throttled = _validate(caller, request_body)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "7"
    assert json.loads(throttled.json()["error"]["message"])["RetryAfter"] == 7
    assert _validate(caller, request_body).json()["code"] == "Success"
    assert [c.fault for c in intune_sim.admin.calls(Route.VALIDATE_REQUEST)] == [
        FaultKind.THROTTLE,
        None,
    ]


def test_internal_error_is_the_nested_json_body_of_issue_48(
    intune_sim: IntuneSim, caller: Caller, request_body: dict[str, object]
) -> None:
    intune_sim.admin.add_fault(Route.VALIDATE_REQUEST, FaultKind.INTERNAL_ERROR)
    response = _validate(caller, request_body)
    error = response.json()["error"]
    inner = json.loads(error["message"])
    assert response.status_code == 500 and error["code"] == "InternalError"
    assert inner["_version"] == 3 and inner["RetryAfter"] is None
    assert "Activity ID: " in inner["Message"] and "\r\n" in error["message"]
    assert {"date", "request-id", "client-request-id"} == error["innerError"].keys()


def test_unavailable_is_503_with_retry_after(
    intune_sim: IntuneSim, caller: Caller, request_body: dict[str, object]
) -> None:
    intune_sim.admin.add_fault(Route.VALIDATE_REQUEST, FaultKind.UNAVAILABLE, retry_after=2)
    response = _validate(caller, request_body)
    assert response.status_code == 503 and response.headers["Retry-After"] == "2"
    assert json.loads(response.json()["error"]["message"])["RetryAfter"] == 2


@pytest.mark.parametrize(
    ("kind", "content"),
    [(FaultKind.BAD_GATEWAY_HTML, b"<html>"), (FaultKind.BAD_GATEWAY_EMPTY, b"")],
)
def test_bad_gateway_has_no_json(
    intune_sim: IntuneSim,
    caller: Caller,
    request_body: dict[str, object],
    kind: FaultKind,
    content: bytes,
) -> None:
    intune_sim.admin.add_fault(Route.VALIDATE_REQUEST, kind)
    response = _validate(caller, request_body)
    assert response.status_code == 502 and response.content.startswith(content)
    if not content:
        assert response.content == b""


def test_not_found_answers_in_each_service_shape(intune_sim: IntuneSim, caller: Caller) -> None:
    intune_sim.admin.add_fault(Route.GRAPH_ENDPOINTS, FaultKind.NOT_FOUND)
    response = caller.endpoints_response()
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "Request_ResourceNotFound"


def test_token_faults_answer_in_the_aad_shape_and_msal_replays_them(
    intune_sim: IntuneSim,
) -> None:
    intune_sim.admin.add_fault(Route.TOKEN, FaultKind.THROTTLE, retry_after=30)
    app = intune_sim.msal_app()
    first = app.acquire_token_for_client([INTUNE_SCOPE])
    second = app.acquire_token_for_client([INTUNE_SCOPE])
    assert first["error"] == "temporarily_unavailable"
    assert second["error"] == "temporarily_unavailable"
    # MSAL served the second error from its throttle cache
    # (docs/specs/intune-api.md, "MSAL for Python against another authority").
    assert len(intune_sim.admin.calls(Route.TOKEN)) == 1
    assert "access_token" in app.acquire_token_for_client([GRAPH_SCOPE])


def test_latency_delays_then_answers_normally(
    intune_sim: IntuneSim, caller: Caller, request_body: dict[str, object]
) -> None:
    request = request_body["request"]
    assert isinstance(request, dict)
    caller.validate(request["certificateRequest"], "tx-1")
    intune_sim.admin.add_fault(Route.SUCCESS_NOTIFICATION, FaultKind.LATENCY, seconds=0.5)
    body = success_notification("tx-1", request["certificateRequest"])
    started = time.monotonic()
    response = caller.scep("successNotification", body)
    assert time.monotonic() - started >= 0.5
    assert response.json()["code"] == "Success"
    assert len(intune_sim.admin.notifications("success")) == 1


def test_hang_outlasts_the_client_and_never_answers(
    intune_sim: IntuneSim, caller: Caller, request_body: dict[str, object]
) -> None:
    intune_sim.admin.add_fault(Route.SUCCESS_NOTIFICATION, FaultKind.HANG, seconds=2)
    request = request_body["request"]
    assert isinstance(request, dict)
    body = success_notification("tx-1", request["certificateRequest"])
    base = caller.discover()["ScepRequestValidationFEService"]
    with pytest.raises(httpx.ReadTimeout):
        caller.http.post(
            f"{base}/ScepActions/successNotification",
            json=body,
            headers={"Authorization": f"Bearer {caller.token()}", "api-version": "2018-02-20"},
            timeout=0.5,
        )
    [call] = intune_sim.admin.calls(Route.SUCCESS_NOTIFICATION)
    assert (call.fault, call.status) == (FaultKind.HANG, None)
    assert intune_sim.admin.notifications() == []  # the handler never ran


def test_reset_drops_the_connection_without_an_answer(
    intune_sim: IntuneSim, caller: Caller, request_body: dict[str, object]
) -> None:
    intune_sim.admin.add_fault(Route.VALIDATE_REQUEST, FaultKind.RESET)
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        _validate(caller, request_body)
    [call] = intune_sim.admin.calls(Route.VALIDATE_REQUEST)
    assert (call.fault, call.status) == (FaultKind.RESET, None)
    assert _validate(caller, request_body).status_code == 200  # the server carries on


def test_a_code_fault_makes_a_notification_answer_non_success(
    intune_sim: IntuneSim, caller: Caller, request_body: dict[str, object]
) -> None:
    intune_sim.admin.add_fault(Route.SUCCESS_NOTIFICATION, FaultKind.CODE, code="ChallengeExpired")
    request = request_body["request"]
    assert isinstance(request, dict)
    body = success_notification("tx-1", request["certificateRequest"])
    result = caller.scep("successNotification", body).json()
    assert result["code"] == "ChallengeExpired" and "@odata.context" in result


def test_counts_probabilities_and_the_wildcard_route(intune_sim: IntuneSim, caller: Caller) -> None:
    intune_sim.admin.add_fault(Route.TOKEN, FaultKind.INTERNAL_ERROR, count=2)
    assert [caller.token_response().status_code for _ in range(3)] == [500, 500, 200]
    intune_sim.admin.add_fault("*", FaultKind.UNAVAILABLE, count=None, probability=1.0)
    assert caller.token_response().status_code == 503
    assert caller.endpoints_response(token="x").status_code == 503
    intune_sim.admin.clear_faults()
    assert caller.token_response().status_code == 200


def test_faults_are_validated_when_added(intune_sim: IntuneSim) -> None:
    for route, kind, options in [
        (Route.TOKEN, FaultKind.CODE, {}),
        (Route.VALIDATE_REQUEST, FaultKind.FALSE_VALUE, {}),
        (Route.TOKEN, FaultKind.THROTTLE, {"count": None}),
        (Route.TOKEN, "explode", {}),
    ]:
        with pytest.raises(ValueError):
            intune_sim.admin.add_fault(route, kind, **options)

"""Fake Microsoft Graph: discovery of the Intune service URIs and its knobs."""

from __future__ import annotations

import pytest

from scepline_devtools.intune_sim import GRAPH_SCOPE, INTUNE_SCOPE
from tests.intune_sim.fixtures import IntuneSim
from tests.intune_sim.helpers import Caller, csr

SCEP = "ScepRequestValidationFEService"
PKI = "PkiConnectorFEService"


def _names(caller: Caller) -> list[str]:
    response = caller.endpoints_response()
    assert response.status_code == 200, response.text
    return [e["providerName"] for e in response.json()["value"]]


def test_lists_both_intune_services_among_decoys(intune_sim: IntuneSim, caller: Caller) -> None:
    response = caller.endpoints_response()
    body = response.json()
    entries = {e["providerName"]: e for e in body["value"]}

    assert response.headers["client-request-id"]
    assert body["@odata.context"].endswith("/endpoints")
    assert entries[SCEP]["uri"] == (
        f"{intune_sim.base_url}/shard-1/RACerts/ScepRequestValidationFEService"
        "/Gateway/StatelessScepRequestValidationService"
    )
    assert entries[PKI]["uri"].startswith(f"{intune_sim.base_url}/shard-1/RACerts/")
    assert set(entries[SCEP]) == {
        "id",
        "capability",
        "providerId",
        "providerName",
        "providerResourceId",
        "uri",
    }
    # Decoys sharing a prefix with the real names, before and after them.
    names = [e["providerName"] for e in body["value"]]
    assert "ScepRequestValidationFEServiceDogfood" in names[: names.index(SCEP)]
    assert "PkiConnectorFEServiceLegacy" in names[names.index(PKI) :]


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c"])
def test_a_missing_or_invalid_token_is_401(caller: Caller, token: str) -> None:
    response = caller.endpoints_response(token=token)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert "innerError" in response.json()["error"]


def test_an_intune_token_at_graph_is_401_for_its_audience(caller: Caller) -> None:
    response = caller.endpoints_response(token=caller.token(INTUNE_SCOPE))
    assert response.status_code == 401
    assert "audience" in response.json()["error"]["message"]


def test_an_expired_token_is_401(intune_sim: IntuneSim, caller: Caller) -> None:
    token = caller.token(GRAPH_SCOPE)
    intune_sim.admin.expire_tokens()
    response = caller.endpoints_response(token=token)
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]
    assert caller.endpoints_response().status_code == 200  # a fresh token works


def test_without_application_read_all_it_is_403(intune_sim: IntuneSim, caller: Caller) -> None:
    app = intune_sim.state.default_app
    intune_sim.admin.register_app(app.model_copy(update={"graph_permission": False}))
    response = caller.endpoints_response()
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Authorization_RequestDenied"
    assert (
        response.json()["error"]["message"] == "Insufficient privileges to complete the operation."
    )


def test_the_scep_entry_can_be_omitted(intune_sim: IntuneSim, caller: Caller) -> None:
    intune_sim.admin.set_knobs(omit_scep_endpoint=True)
    assert SCEP not in _names(caller) and PKI in _names(caller)


@pytest.mark.parametrize(
    ("mode", "live_index"), [("same", None), ("stale_first", 1), ("stale_last", 0)]
)
def test_duplicate_entries(
    intune_sim: IntuneSim, caller: Caller, mode: str, live_index: int | None
) -> None:
    intune_sim.admin.set_knobs(duplicate_endpoints=mode)
    value = caller.endpoints_response().json()["value"]
    uris = [e["uri"] for e in value if e["providerName"] == SCEP]
    assert len(uris) == 2
    if live_index is None:
        assert uris[0] == uris[1]
        return
    request = {"request": {"transactionId": "t", "certificateRequest": "", "callerInfo": "c"}}
    live = caller.post(f"{uris[live_index]}/ScepActions/validateRequest", request)
    stale = caller.post(f"{uris[1 - live_index]}/ScepActions/validateRequest", request)
    assert live.status_code == 200 and stale.status_code == 404


def test_a_shard_move_changes_the_uri_and_the_old_one_answers_404(
    intune_sim: IntuneSim, caller: Caller
) -> None:
    old = caller.discover()[SCEP]
    intune_sim.admin.move_shard("shard-2")
    new = caller.discover()[SCEP]
    challenge = intune_sim.admin.mint_challenge().challenge
    request = {
        "request": {
            "transactionId": "t",
            "certificateRequest": csr(challenge=challenge),
            "callerInfo": "c",
        }
    }

    at_old = caller.post(f"{old}/ScepActions/validateRequest", request)
    at_new = caller.post(f"{new}/ScepActions/validateRequest", request)

    assert "/shard-2/" in new
    assert at_old.status_code == 404 and at_old.json()["error"]["code"] == "NotFound"
    assert at_new.status_code == 200 and at_new.json()["code"] == "Success"


def test_the_listed_host_can_be_overridden(intune_sim: IntuneSim, caller: Caller) -> None:
    intune_sim.admin.set_knobs(intune_base_url="https://localhost:1")
    assert caller.discover()[SCEP].startswith("https://localhost:1/shard-1/")

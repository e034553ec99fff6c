"""validateRequest: every answer code, and the protocol checks around it.

Business outcomes are HTTP 200 with a ``code``; only auth, api-version and body
shape problems are 4xx (``docs/specs/intune-api.md``, "Calls, results and errors"
and "What the simulator reproduces").
"""

from __future__ import annotations

import base64
import ipaddress
import json
from typing import Any

import pytest
from asn1crypto import core as asn1_core
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from scepline_devtools.intune_sim import ChallengeSpec, FaultKind, Route, SimulatorState
from scepline_devtools.intune_sim.challenges import mint
from tests.intune_sim.fixtures import IntuneSim
from tests.intune_sim.helpers import CLIENT_AUTH, Caller, csr, ec_key, rsa_key

SID_URL = "tag:microsoft.com,2022-09-14:sid:S-1-5-21-1-2-3-1001"
UPN = x509.OtherName(
    x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), asn1_core.UTF8String("ann@contoso.com").dump()
)


def _code(result: dict[str, Any]) -> str:
    assert set(result) == {"@odata.context", "code", "errorDescription"}
    assert "$metadata#microsoft.management.services" in result["@odata.context"]
    code: str = result["code"]
    return code


def test_success_when_the_csr_matches_everything_the_challenge_names(
    intune_sim: IntuneSim, caller: Caller
) -> None:
    minted = intune_sim.admin.mint_challenge(
        subject="CN=ann,O=Contoso",
        sans=["UPN:ann@contoso.com", f"URI:{SID_URL}", "dns:Ann-Laptop.contoso.com", "IP:10.1.2.3"],
        eku=[CLIENT_AUTH.dotted_string],
        key_size=2048,
    )
    request = csr(
        challenge=minted.challenge,
        subject="CN=ann,O=Contoso",
        sans=[
            UPN,
            x509.UniformResourceIdentifier(SID_URL),
            x509.DNSName("ann-laptop.contoso.com"),
            x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
        ],
        eku=[CLIENT_AUTH],
    )
    result = caller.validate(request)
    assert (_code(result), result["errorDescription"]) == ("Success", "")
    assert intune_sim.state.challenges[minted.id].uses == 1


def test_no_challenge_password_attribute(caller: Caller) -> None:
    assert _code(caller.validate(csr(challenge=None))) == "ChallengePasswordMissing"


@pytest.mark.parametrize(
    "challenge", ["not base64!", base64.b64encode(b"not json").decode(), "e30="]
)
def test_an_undecodable_challenge(caller: Caller, challenge: str) -> None:
    assert _code(caller.validate(csr(challenge=challenge))) == "ChallengeDecodingError"


def test_a_tampered_challenge_fails_its_signature(intune_sim: IntuneSim, caller: Caller) -> None:
    minted = intune_sim.admin.mint_challenge(subject="CN=device-1")
    document = json.loads(base64.b64decode(minted.challenge))
    document["p"]["sub"] = "CN=someone-else"
    tampered = base64.b64encode(json.dumps(document).encode()).decode()
    result = caller.validate(csr(challenge=tampered, subject="CN=someone-else"))
    assert _code(result) == "SignatureValidationFailed"


def test_a_challenge_from_another_intune_fails_its_signature(caller: Caller) -> None:
    # Same tenant, another challenge key; that Intune need not even be running.
    other = SimulatorState(tenant_id=caller.sim.tenant_id, signing_key=rsa_key("other"))
    foreign = mint(other, ChallengeSpec()).challenge
    assert _code(caller.validate(csr(challenge=foreign))) == "SignatureValidationFailed"


def test_a_challenge_expires_after_sixty_minutes_of_simulated_time(
    intune_sim: IntuneSim, caller: Caller
) -> None:
    minted = intune_sim.admin.mint_challenge()
    intune_sim.admin.advance_clock(59 * 60)
    assert _code(caller.validate(csr(challenge=minted.challenge))) == "Success"
    intune_sim.admin.advance_clock(2 * 60)
    result = caller.validate(csr(challenge=minted.challenge))
    assert _code(result) == "ChallengeExpired"
    assert "challengeExpInterval=60" in result["errorDescription"]


@pytest.mark.parametrize(
    ("expected", "sent", "code"),
    [
        ({"subject": "CN=device-1"}, {"subject": "CN=device-2"}, "SubjectNameMismatch"),
        ({"subject": "CN=device-1"}, {"subject": ""}, "SubjectNameMissing"),
        (
            {"sans": ["DNS:a.example"]},
            {"sans": [x509.DNSName("b.example")]},
            "SubjectAltNameMismatch",
        ),
        ({"sans": ["DNS:a.example"]}, {}, "SubjectAltNameMissing"),
        ({"key_size": 4096}, {"key": rsa_key()}, "KeyLengthMismatch"),
        ({"key_size": 256}, {"key": ec_key()}, "Success"),
        (
            {"eku": [CLIENT_AUTH.dotted_string]},
            {"eku": [ExtendedKeyUsageOID.SERVER_AUTH]},
            "EnhancedKeyUsageMismatch",
        ),
        ({"eku": [CLIENT_AUTH.dotted_string]}, {}, "EnhancedKeyUsageMissing"),
    ],
)
def test_the_csr_must_match_the_profile(
    intune_sim: IntuneSim,
    caller: Caller,
    expected: dict[str, Any],
    sent: dict[str, Any],
    code: str,
) -> None:
    minted = intune_sim.admin.mint_challenge(**expected)
    result = caller.validate(csr(challenge=minted.challenge, **sent))
    assert _code(result) == code


def test_a_profile_no_longer_targeted(intune_sim: IntuneSim, caller: Caller) -> None:
    minted = intune_sim.admin.mint_challenge()
    intune_sim.admin.untarget(minted.id)
    result = caller.validate(csr(challenge=minted.challenge))
    assert _code(result) == "ScepProfileNoLongerTargetedToTheClient"


def test_a_challenge_from_another_tenant(intune_sim: IntuneSim, caller: Caller) -> None:
    minted = intune_sim.admin.mint_challenge(tenant_id="11111111-2222-3333-4444-555555555555")
    assert _code(caller.validate(csr(challenge=minted.challenge))) == "BadTenantIdInChallenge"


@pytest.mark.parametrize(
    "certificate_request",
    [
        "not base64",
        base64.b64encode(b"\x30\x03\x02\x01\x00").decode(),
        # A CSR whose signature no longer covers its content.
        csr(challenge="x")[:-8] + "AAAAAAA=",
    ],
)
def test_a_csr_that_does_not_decode(caller: Caller, certificate_request: str) -> None:
    result = caller.validate(certificate_request)
    assert _code(result) == "CertificateRequestDecodingFailed"


def test_unknown_codes_can_be_forced_per_challenge_or_per_call(
    intune_sim: IntuneSim, caller: Caller
) -> None:
    forced = intune_sim.admin.mint_challenge(force_code="SomeCodeNobodyKnows")
    assert _code(caller.validate(csr(challenge=forced.challenge))) == "SomeCodeNobodyKnows"
    intune_sim.admin.add_fault(Route.VALIDATE_REQUEST, FaultKind.CODE)
    fine = intune_sim.admin.mint_challenge()
    assert _code(caller.validate(csr(challenge=fine.challenge))) == "SimInventedUnknownCode"
    assert _code(caller.validate(csr(challenge=fine.challenge))) == "Success"  # count was 1


def test_replay_is_allowed_unless_configured_otherwise(
    intune_sim: IntuneSim, caller: Caller
) -> None:
    minted = intune_sim.admin.mint_challenge()
    request = csr(challenge=minted.challenge)
    assert [_code(caller.validate(request)) for _ in range(2)] == ["Success", "Success"]
    intune_sim.admin.set_knobs(replay="reject")
    assert _code(caller.validate(request)) == "ChallengeExpired"
    intune_sim.admin.set_knobs(replay_code="ChallengeAlreadyUsed")
    assert _code(caller.validate(request)) == "ChallengeAlreadyUsed"


class TestProtocolErrors:
    """Not business outcomes: HTTP 4xx with an OData error (nested JSON message)."""

    @pytest.fixture
    def body(self, intune_sim: IntuneSim) -> dict[str, Any]:
        challenge = intune_sim.admin.mint_challenge().challenge
        request = {"transactionId": "t", "certificateRequest": csr(challenge=challenge)}
        return {"request": {**request, "callerInfo": "tests"}}

    @staticmethod
    def _error(response: Any, status: int) -> dict[str, Any]:
        assert response.status_code == status, response.text
        error: dict[str, Any] = response.json()["error"]
        inner = json.loads(error["message"])
        assert {"_version", "Message", "CustomApiErrorPhrase", "RetryAfter"} <= inner.keys()
        assert error["innerError"]["client-request-id"]
        return error

    def test_both_api_versions_are_accepted(self, caller: Caller, body: dict[str, Any]) -> None:
        for version in ("2018-02-20", "5019-05-05"):
            assert caller.scep("validateRequest", body, api_version=version).status_code == 200

    @pytest.mark.parametrize("version", [None, "2020-01-01"])
    def test_api_version_header_required(
        self, caller: Caller, body: dict[str, Any], version: str | None
    ) -> None:
        self._error(caller.scep("validateRequest", body, api_version=version), 400)

    def test_api_version_as_a_query_parameter_does_not_count(
        self, caller: Caller, body: dict[str, Any]
    ) -> None:
        base = caller.discover()["ScepRequestValidationFEService"]
        url = f"{base}/ScepActions/validateRequest?api-version=2018-02-20"
        self._error(caller.post(url, body, api_version=None), 400)

    @pytest.mark.parametrize("token", ["", "garbage"])
    def test_a_missing_or_invalid_token(
        self, caller: Caller, body: dict[str, Any], token: str
    ) -> None:
        response = caller.scep("validateRequest", body, token=token)
        assert self._error(response, 401)["code"] == "Unauthorized"

    def test_a_graph_token_has_the_wrong_audience(
        self, caller: Caller, body: dict[str, Any]
    ) -> None:
        from scepline_devtools.intune_sim import GRAPH_SCOPE

        graph_token = caller.token(GRAPH_SCOPE)
        self._error(caller.scep("validateRequest", body, token=graph_token), 401)

    def test_an_expired_token(
        self, intune_sim: IntuneSim, caller: Caller, body: dict[str, Any]
    ) -> None:
        token = caller.token()
        intune_sim.admin.expire_tokens()
        self._error(caller.scep("validateRequest", body, token=token), 401)

    @pytest.mark.parametrize(("status", "code"), [(401, "Unauthorized"), (403, "Forbidden")])
    def test_a_token_without_the_role(
        self, intune_sim: IntuneSim, caller: Caller, body: dict[str, Any], status: int, code: str
    ) -> None:
        app = intune_sim.state.default_app
        intune_sim.admin.register_app(app.model_copy(update={"has_role": False}))
        intune_sim.admin.set_knobs(missing_role_status=status)
        assert self._error(caller.scep("validateRequest", body), status)["code"] == code

    @pytest.mark.parametrize(
        "mutate",
        [
            lambda b: {"notification": b["request"]},
            lambda b: {"request": {k: v for k, v in b["request"].items() if k != "callerInfo"}},
            lambda b: {"request": {**b["request"], "transactionId": None}},
            lambda b: {"request": {**b["request"], "transactionId": 42}},
            lambda b: {"request": {**b["request"], "transactionID": "typo"}},
            lambda b: {**b, "extra": 1},
            lambda b: [b],
        ],
    )
    def test_a_malformed_body(self, caller: Caller, body: dict[str, Any], mutate: Any) -> None:
        self._error(caller.scep("validateRequest", mutate(body)), 400)

    def test_undeclared_properties_pass_when_the_knob_allows(
        self, intune_sim: IntuneSim, caller: Caller, body: dict[str, Any]
    ) -> None:
        intune_sim.admin.set_knobs(reject_unknown_properties=False)
        body["request"]["somethingNew"] = "x"
        assert caller.scep("validateRequest", body).json()["code"] == "Success"

    def test_body_that_is_not_json(self, caller: Caller) -> None:
        base = caller.discover()["ScepRequestValidationFEService"]
        response = caller.http.post(
            f"{base}/ScepActions/validateRequest",
            content=b"<xml/>",
            headers={
                "Authorization": f"Bearer {caller.token()}",
                "api-version": "2018-02-20",
                "client-request-id": "c0ffee",
            },
        )
        self._error(response, 400)

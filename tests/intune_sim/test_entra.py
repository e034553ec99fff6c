"""Fake Entra ID: the token endpoint's answers and error shapes."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from scepline_devtools.intune_sim import INTUNE_SCOPE, INTUNE_SCOPE_SINGLE_SLASH, AppRegistration
from scepline_devtools.intune_sim.jws import b64url_encode, parse, sign_rs256
from tests.intune_sim.fixtures import IntuneSim
from tests.intune_sim.helpers import Caller, certificate_credential, rsa_key


def _aad_error(response: httpx.Response, status: int, error: str, aadsts: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error
    assert body["error_codes"] == [aadsts]
    assert body["error_description"].startswith(f"AADSTS{aadsts}: ")
    assert {"timestamp", "trace_id", "correlation_id"} <= body.keys()


def test_openid_configuration_names_the_tenant_guid_endpoints(
    intune_sim: IntuneSim, caller: Caller
) -> None:
    for tenant in (intune_sim.tenant_id, intune_sim.tenant_domain):
        url = f"{intune_sim.base_url}/{tenant}/v2.0/.well-known/openid-configuration"
        config = caller.http.get(url).json()
        assert config["token_endpoint"] == f"{intune_sim.authority}/oauth2/v2.0/token"
        assert config["issuer"] == f"{intune_sim.authority}/v2.0"
        assert config["jwks_uri"] == f"{intune_sim.authority}/discovery/v2.0/keys"


def test_unknown_tenant_is_400_for_discovery_and_tokens(
    intune_sim: IntuneSim, caller: Caller
) -> None:
    url = f"{intune_sim.base_url}/nowhere.example/v2.0/.well-known/openid-configuration"
    _aad_error(caller.http.get(url), 400, "invalid_tenant", 90002)
    token_url = f"{intune_sim.base_url}/nowhere.example/oauth2/v2.0/token"
    response = caller.http.post(token_url, data={"grant_type": "client_credentials"})
    _aad_error(response, 400, "invalid_tenant", 90002)


def test_unknown_client_is_400_and_a_bad_secret_401(caller: Caller) -> None:
    _aad_error(caller.token_response(client_id="no-such-app"), 400, "unauthorized_client", 700016)
    _aad_error(caller.token_response(client_secret="wrong"), 401, "invalid_client", 7000215)
    _aad_error(caller.token_response(client_id=""), 400, "invalid_request", 900144)


def test_only_client_credentials_is_supported(caller: Caller) -> None:
    response = caller.token_response(grant_type="password")
    _aad_error(response, 400, "unsupported_grant_type", 70003)


@pytest.mark.parametrize(
    "scope",
    [
        "https://graph.microsoft.com/.default https://api.manage.microsoft.com//.default",
        "https://api.manage.microsoft.com/",
        INTUNE_SCOPE_SINGLE_SLASH,
        "https://example.com/.default",
    ],
)
def test_other_scopes_are_invalid_scope(caller: Caller, scope: str) -> None:
    _aad_error(caller.token_response(scope=scope), 400, "invalid_scope", 70011)


def test_the_single_slash_scope_works_only_when_allowed(
    intune_sim: IntuneSim, caller: Caller
) -> None:
    intune_sim.admin.set_knobs(accept_single_slash_scope=True)
    token = caller.token(INTUNE_SCOPE_SINGLE_SLASH)
    assert parse(token).claims["aud"] == "https://api.manage.microsoft.com/"
    assert intune_sim.admin.token_count(INTUNE_SCOPE_SINGLE_SLASH) == 1


def test_reserved_oidc_scopes_are_ignored(caller: Caller) -> None:
    assert caller.token(f"{INTUNE_SCOPE} openid profile offline_access")


def test_an_app_without_the_role_gets_a_token_without_roles(
    intune_sim: IntuneSim, caller: Caller
) -> None:
    app = intune_sim.state.default_app
    intune_sim.admin.register_app(app.model_copy(update={"has_role": False}))
    claims = parse(caller.token()).claims
    assert "roles" not in claims  # Entra omits the claim; it does not refuse the token


def test_expires_in_is_configurable(intune_sim: IntuneSim, caller: Caller) -> None:
    intune_sim.admin.set_knobs(token_lifetime_seconds=600)
    response = caller.token_response()
    assert response.json()["expires_in"] == 600
    claims = parse(response.json()["access_token"]).claims
    assert claims["exp"] - claims["iat"] == 600


def test_tokens_are_signed_by_the_key_in_jwks(intune_sim: IntuneSim, caller: Caller) -> None:
    token = parse(caller.token())
    keys = caller.http.get(f"{intune_sim.authority}/discovery/v2.0/keys").json()["keys"]
    assert token.header["alg"] == "RS256"
    assert token.header["kid"] == keys[0]["kid"]
    token.verify(intune_sim.state.signing_key.public_key())


class TestClientAssertion:
    """RS256 assertions as EJBCA builds them: x5t, iss = sub = client id, aud = token URL."""

    @pytest.fixture(autouse=True)
    def app(self, intune_sim: IntuneSim) -> None:
        _, cert_pem, self.certificate = certificate_credential("assertion-app")
        intune_sim.admin.register_app(
            AppRegistration(client_id="assertion-app", certificate_pem=cert_pem)
        )

    def _post(
        self, intune_sim: IntuneSim, caller: Caller, key: RSAPrivateKey | None = None, **claims: Any
    ) -> httpx.Response:
        now = int(time.time())
        claims = {
            "aud": f"{intune_sim.authority}/oauth2/v2.0/token",
            "iss": "assertion-app",
            "sub": "assertion-app",
            "jti": "1",
            "nbf": now,
            "exp": now + 60,
            **claims,
        }
        x5t = b64url_encode(self.certificate.fingerprint(hashes.SHA1()))
        assertion = sign_rs256(
            {k: v for k, v in claims.items() if v is not None},
            key or rsa_key("assertion-app"),
            {"x5t": x5t},
        )
        return caller.token_response(
            client_id="assertion-app",
            client_secret=None,
            client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            client_assertion=assertion,
        )

    def test_a_valid_assertion_gets_a_token(self, intune_sim: IntuneSim, caller: Caller) -> None:
        assert self._post(intune_sim, caller).status_code == 200

    @pytest.mark.parametrize(
        ("claims", "aadsts"),
        [
            ({"aud": "https://login.microsoftonline.com/x/oauth2/v2.0/token"}, 700212),
            ({"iss": "someone-else"}, 700021),
            ({"sub": "someone-else"}, 700021),
            ({"exp": int(time.time()) - 3600}, 700024),
            ({"exp": None}, 700024),
            ({"nbf": int(time.time()) + 3600}, 700024),
        ],
    )
    def test_a_bad_assertion_is_invalid_client(
        self, intune_sim: IntuneSim, caller: Caller, claims: dict[str, Any], aadsts: int
    ) -> None:
        _aad_error(self._post(intune_sim, caller, **claims), 401, "invalid_client", aadsts)

    def test_an_assertion_signed_by_another_key_is_invalid_client(
        self, intune_sim: IntuneSim, caller: Caller
    ) -> None:
        response = self._post(intune_sim, caller, key=rsa_key("not-the-certificate-key"))
        _aad_error(response, 401, "invalid_client", 700027)

    def test_a_secret_does_not_work_for_a_certificate_only_app(self, caller: Caller) -> None:
        response = caller.token_response(client_id="assertion-app", client_secret="guess")
        _aad_error(response, 401, "invalid_client", 7000215)

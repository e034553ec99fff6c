"""Access tokens the fake Entra issues, and how the fake resources check them.

Tokens look like Entra's v1 app-only tokens (``appid``, ``tid``, ``roles``,
``ver: "1.0"``), signed RS256 by the simulator's own key. Their lifetime runs
on real time, like the client's token cache (see ``SimClock``).
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Collection
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from .errors import AadError
from .jws import JwsError, b64url_encode, parse, sign_rs256
from .models import AppRegistration
from .state import SimulatorState

__all__ = [
    "JWT_BEARER",
    "TokenRejected",
    "authenticate_client",
    "issue_token",
    "jwks",
    "key_id",
    "verify_bearer",
]

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_SKEW = 300  # seconds of clock skew Entra tolerates on assertions


class TokenRejected(Exception):
    """A bearer token a resource refuses; ``reason`` picks the error text."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def key_id(state: SimulatorState) -> str:
    der = state.signing_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA1())  # noqa: S303 - an x5t-like key id, not security
    digest.update(der)
    return b64url_encode(digest.finalize())


def jwks(state: SimulatorState) -> dict[str, Any]:
    numbers = state.signing_key.public_key().public_numbers()

    def _b64_int(value: int) -> str:
        return b64url_encode(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    kid = key_id(state)
    return {
        "keys": [
            {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "x5t": kid}
            | {"n": _b64_int(numbers.n), "e": _b64_int(numbers.e)}
        ]
    }


def issue_token(
    state: SimulatorState,
    app: AppRegistration,
    *,
    audience: str,
    roles: list[str],
    certificate_credential: bool,
) -> str:
    now = int(time.time())
    object_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{app.client_id}"))
    claims: dict[str, Any] = {
        "aud": audience,
        "iss": f"https://sts.windows.net/{state.tenant_id}/",
        "iat": now,
        "nbf": now,
        "exp": now + state.knobs.token_lifetime_seconds,
        "appid": app.client_id,
        "appidacr": "2" if certificate_credential else "1",
        "idp": f"https://sts.windows.net/{state.tenant_id}/",
        "oid": object_id,
        "sub": object_id,
        "tid": state.tenant_id,
        "uti": uuid.uuid4().hex,
        "ver": "1.0",
    }
    if roles:  # Entra omits the claim when nothing is consented
        claims["roles"] = roles
    with state.lock:
        state.issued_tokens.add(claims["uti"])
    kid = key_id(state)
    return sign_rs256(claims, state.signing_key, {"kid": kid, "x5t": kid})


def verify_bearer(
    state: SimulatorState, authorization: str | None, audiences: Collection[str]
) -> dict[str, Any]:
    """Claims of a valid token for one of `audiences`, else TokenRejected."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenRejected("missing", "Authorization header is missing or not a bearer token.")
    try:
        parsed = parse(token.strip())
        parsed.verify(state.signing_key.public_key())
    except JwsError as exc:
        raise TokenRejected("invalid", f"Access token validation failure: {exc}.") from exc
    claims = parsed.claims
    now = time.time()
    expired = claims.get("uti") in state.expired_tokens
    if expired or not isinstance(claims.get("exp"), int | float) or claims["exp"] <= now:
        raise TokenRejected("expired", "Access token has expired or is not yet valid.")
    if claims.get("aud") not in audiences:
        raise TokenRejected("audience", "Access token validation failure. Invalid audience.")
    if claims.get("tid") != state.tenant_id:
        raise TokenRejected("tenant", "Access token is from another tenant.")
    return claims


def authenticate_client(
    state: SimulatorState, form: dict[str, str], accepted_audiences: Collection[str]
) -> tuple[AppRegistration, bool]:
    """The calling app and whether it proved itself with a certificate."""
    client_id = form.get("client_id", "")
    if not client_id:
        raise AadError(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        )
    app = state.apps.get(client_id)
    if app is None:
        raise AadError(
            400,
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory "
            f"'{state.tenant_domain}'.",
        )
    if "client_assertion" in form:
        _check_assertion(app, form, accepted_audiences)
        return app, True
    secret = form.get("client_secret")
    if secret is None:
        raise AadError(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: "
            "'client_assertion' or 'client_secret'.",
        )
    if app.client_secret is None or not hmac.compare_digest(
        secret.encode(), app.client_secret.encode()
    ):
        raise AadError(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is "
            f"the client secret value, not the client secret ID, for a secret added to app "
            f"'{client_id}'.",
        )
    return app, False


def _check_assertion(
    app: AppRegistration, form: dict[str, str], accepted_audiences: Collection[str]
) -> None:
    def reject(aadsts: int, text: str) -> AadError:
        return AadError(401, "invalid_client", aadsts, text)

    if form.get("client_assertion_type") != JWT_BEARER:
        raise AadError(
            400, "invalid_request", 700024, f"client_assertion_type must be '{JWT_BEARER}'."
        )
    try:
        assertion = parse(form["client_assertion"])
    except JwsError as exc:
        raise reject(50027, "JWT token is invalid or malformed.") from exc
    if app.certificate_pem is None:
        raise reject(700027, "No certificate is registered on the application.")
    certificate = x509.load_pem_x509_certificate(app.certificate_pem.encode())
    expected = {
        "x5t": b64url_encode(certificate.fingerprint(hashes.SHA1())),  # noqa: S303
        "x5t#S256": b64url_encode(certificate.fingerprint(hashes.SHA256())),
    }
    # MSAL keeps the base64 padding on x5t; RFC 7515 drops it. Entra takes both.
    presented = {
        k: str(assertion.header[k]).rstrip("=") for k in expected if assertion.header.get(k)
    }
    if not presented:
        raise reject(700027, "Client assertion has neither an x5t nor an x5t#S256 header.")
    if any(expected[k] != v for k, v in presented.items()):
        raise reject(
            700027,
            "The certificate with identifier used to sign the client assertion is not "
            "registered on application. [Reason - The key was not found.]",
        )
    public_key = certificate.public_key()
    try:
        assertion.verify(public_key)  # type: ignore[arg-type]
    except (JwsError, TypeError) as exc:
        raise reject(700027, f"Client assertion failed signature validation: {exc}.") from exc
    claims, now = assertion.claims, time.time()
    if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
        raise reject(700021, "Client assertion application identifier doesn't match 'client_id'.")
    if claims.get("aud") not in accepted_audiences:
        raise reject(700212, f"Client assertion audience {claims.get('aud')!r} is invalid.")
    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    if not isinstance(exp, int | float) or exp + _SKEW < now:
        raise reject(700024, "Client assertion is not within its valid time range.")
    if not isinstance(nbf, int | float) or nbf - _SKEW > now:
        raise reject(700024, "Client assertion is not within its valid time range.")

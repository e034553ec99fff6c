"""Fake Entra ID: OIDC discovery, JWKS, instance discovery and the v2 token endpoint.

MSAL 1.39 with a custom authority and ``instance_discovery=False`` GETs
``{authority}/v2.0/.well-known/openid-configuration`` and then POSTs to the
``token_endpoint`` named there. With ``instance_discovery`` set to a URL it
first GETs that URL; ``/common/discovery/instance`` answers it here.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .errors import AadError
from .state import (
    GRAPH_AUDIENCE,
    GRAPH_ROLE,
    GRAPH_SCOPE,
    INTUNE_AUDIENCE,
    INTUNE_SCOPE,
    INTUNE_SCOPE_SINGLE_SLASH,
    SCEP_ROLE,
    SimulatorState,
)
from .tokens import authenticate_client, issue_token, jwks

__all__ = ["base_url", "entra_router"]

_RESERVED_SCOPES = {"openid", "profile", "offline_access"}


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _state(request: Request) -> SimulatorState:
    state: SimulatorState = request.app.state.simulator
    return state


def _tenant_or_400(state: SimulatorState, tenant: str) -> None:
    if not state.tenant_matches(tenant):
        raise AadError(
            400,
            "invalid_tenant",
            90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
            "and are signing into the correct cloud.",
        )


def _openid_configuration(base: str, tenant_id: str) -> dict[str, Any]:
    prefix = f"{base}/{tenant_id}"
    return {
        "token_endpoint": f"{prefix}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": [
            "client_secret_post",
            "private_key_jwt",
            "client_secret_basic",
        ],
        "jwks_uri": f"{prefix}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{prefix}/v2.0",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"{base}/oidc/userinfo",
        "authorization_endpoint": f"{prefix}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{prefix}/oauth2/v2.0/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{prefix}/oauth2/v2.0/logout",
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "ver"],
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
    }


entra_router = APIRouter()


@entra_router.get("/common/discovery/instance")
async def instance_discovery(request: Request) -> JSONResponse:
    # MSAL asks this when instance_discovery is a URL; answer for our own host only.
    state, base = _state(request), base_url(request)
    endpoint = urlsplit(request.query_params.get("authorization_endpoint", ""))
    tenant = endpoint.path.strip("/").split("/")[0] if endpoint.path else ""
    # MSAL sends the host without its port (Authority.instance is a hostname).
    if endpoint.hostname != urlsplit(base).hostname or not state.tenant_matches(tenant):
        return JSONResponse(
            {"error": "invalid_instance", "error_description": "AADSTS50049: Unknown instance"},
            status_code=400,
        )
    host = urlsplit(base).netloc
    return JSONResponse(
        {
            "tenant_discovery_endpoint": f"{base}/{tenant}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        }
    )


@entra_router.get("/{tenant}/v2.0/.well-known/openid-configuration")
async def openid_configuration(tenant: str, request: Request) -> JSONResponse:
    state = _state(request)
    _tenant_or_400(state, tenant)
    # Entra names the tenant GUID in the endpoints even when asked by domain name.
    return JSONResponse(_openid_configuration(base_url(request), state.tenant_id))


@entra_router.get("/{tenant}/discovery/v2.0/keys")
async def signing_keys(tenant: str, request: Request) -> JSONResponse:
    state = _state(request)
    _tenant_or_400(state, tenant)
    return JSONResponse(jwks(state))


@entra_router.post("/{tenant}/oauth2/v2.0/token")
async def token(tenant: str, request: Request) -> JSONResponse:
    state = _state(request)
    _tenant_or_400(state, tenant)
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    grant_type = form.get("grant_type")
    if grant_type != "client_credentials":
        raise AadError(
            400,
            "unsupported_grant_type",
            70003,
            f"The app requested an unsupported grant type '{grant_type}'.",
        )
    base = base_url(request)
    audiences = {f"{base}/{t}/oauth2/v2.0/token" for t in (state.tenant_id, state.tenant_domain)}
    audiences.add(f"{base}/{state.tenant_id}/v2.0")
    app, by_certificate = authenticate_client(state, form, audiences)
    scope, resource = _resource(state, form.get("scope"))
    if resource == GRAPH_AUDIENCE:
        roles = [GRAPH_ROLE] if app.graph_permission else []
    else:
        roles = [SCEP_ROLE] if app.has_role else []
    access_token = issue_token(
        state, app, audience=resource, roles=roles, certificate_credential=by_certificate
    )
    with state.lock:
        state.token_counts[scope] += 1
    lifetime = state.knobs.token_lifetime_seconds
    return JSONResponse(
        {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": access_token,
        },
        headers={"client-request-id": request.headers.get("client-request-id", "")},
    )


def _resource(state: SimulatorState, scope: str | None) -> tuple[str, str]:
    """The `/.default` scope asked for (one resource only) and its token audience."""
    if not scope:
        raise AadError(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        )
    wanted = [s for s in scope.split() if s not in _RESERVED_SCOPES]
    accepted = {GRAPH_SCOPE: GRAPH_AUDIENCE, INTUNE_SCOPE: INTUNE_AUDIENCE}
    if state.knobs.accept_single_slash_scope:
        accepted[INTUNE_SCOPE_SINGLE_SLASH] = INTUNE_AUDIENCE
    if len(wanted) != 1 or wanted[0] not in accepted:
        raise AadError(
            400,
            "invalid_scope",
            70011,
            f"The provided request must include a 'scope' input parameter. The provided value "
            f"for the input parameter 'scope' is not valid. The scope {scope} is not valid.",
        )
    return wanted[0], accepted[wanted[0]]

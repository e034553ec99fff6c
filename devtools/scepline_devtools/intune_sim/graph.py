"""Fake Microsoft Graph: the Intune service principal's endpoints
(docs/specs/intune-api.md, "Service discovery").

The listed URIs point back at this simulator under the current shard prefix,
so a shard move is a knob change: the old prefix then answers 404.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .entra import base_url
from .errors import GraphError
from .state import (
    GRAPH_AUDIENCE,
    INTUNE_APP_ID,
    PKI_SERVICE_PATH,
    SCEP_SERVICE_PATH,
    SimulatorState,
)
from .tokens import TokenRejected, verify_bearer

__all__ = ["STALE_SHARD", "discovered_uris", "graph_router"]

STALE_SHARD = "shard-stale"  # where "stale" duplicate entries point (always 404)
_GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
_READ_ROLES = {"Application.Read.All", "Application.ReadWrite.All", "Directory.Read.All"}
# Other Intune services listed beside ours; two contain our names as substrings to
# catch clients that match loosely instead of comparing the whole providerName.
_DECOYS = (
    ("DeviceManagementFEService", "StatelessDeviceManagementFEService"),
    ("ScepRequestValidationFEServiceDogfood", "ScepDogfood"),
    ("PkiConnectorFEServiceLegacy", "PkiLegacy"),
    ("StatelessAppMetadataFEService", "AppMetadata"),
)


def discovered_uris(state: SimulatorState, base: str, shard: str | None = None) -> dict[str, str]:
    """The URIs Graph lists now, by providerName."""
    host = (state.knobs.intune_base_url or base).rstrip("/")
    prefix = f"{host}/{shard or state.knobs.shard}"
    return {
        "ScepRequestValidationFEService": f"{prefix}/{SCEP_SERVICE_PATH}",
        "PkiConnectorFEService": f"{prefix}/{PKI_SERVICE_PATH}",
    }


def _entry(name: str, uri: str) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{name}|{uri}")),
        "capability": name,
        "providerId": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
        "providerName": name,
        "providerResourceId": "https://api.manage.microsoft.com/",
        "uri": uri,
    }


def _endpoints(state: SimulatorState, base: str) -> list[dict[str, Any]]:
    knobs = state.knobs
    live = discovered_uris(state, base)
    stale = discovered_uris(state, base, STALE_SHARD)
    intune: list[dict[str, Any]] = []
    for name, uri in live.items():
        if (name == "ScepRequestValidationFEService" and knobs.omit_scep_endpoint) or (
            name == "PkiConnectorFEService" and knobs.omit_pki_endpoint
        ):
            continue
        entries = [_entry(name, uri)]
        if knobs.duplicate_endpoints == "same":
            entries.append(_entry(name, uri))
        elif knobs.duplicate_endpoints == "stale_first":
            entries.insert(0, _entry(name, stale[name]))
        elif knobs.duplicate_endpoints == "stale_last":
            entries.append(_entry(name, stale[name]))
        intune.extend(entries)
    host = (knobs.intune_base_url or base).rstrip("/")
    decoys = [_entry(name, f"{host}/decoy/{path}") for name, path in _DECOYS]
    # Decoys on both sides, so neither "first match" nor "last match" is trivially right.
    return decoys[:2] + intune + decoys[2:]


graph_router = APIRouter()


@graph_router.get("/v1.0/servicePrincipals/appId={app_id}/endpoints")
async def service_principal_endpoints(app_id: str, request: Request) -> JSONResponse:
    state: SimulatorState = request.app.state.simulator
    try:
        claims = verify_bearer(
            state, request.headers.get("authorization"), (GRAPH_AUDIENCE, _GRAPH_APP_ID)
        )
    except TokenRejected as rejected:
        code = "InvalidAuthenticationToken"
        raise GraphError(
            401, code, rejected.detail, **{"WWW-Authenticate": 'Bearer realm=""'}
        ) from rejected
    if not _READ_ROLES.intersection(claims.get("roles", [])):
        raise GraphError(
            403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
        )
    if app_id.lower() != INTUNE_APP_ID:
        raise GraphError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{app_id}' does not exist or one of its queried reference-property "
            "objects are not present.",
        )
    base = base_url(request)
    sp_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{INTUNE_APP_ID}:{state.tenant_id}"))
    return JSONResponse(
        {
            "@odata.context": f"{base}/v1.0/$metadata#servicePrincipals('{sp_id}')/endpoints",
            "value": _endpoints(state, base),
        },
        headers={
            "client-request-id": request.headers.get("client-request-id", ""),
            "request-id": str(uuid.uuid4()),
        },
    )

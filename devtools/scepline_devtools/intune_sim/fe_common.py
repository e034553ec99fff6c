"""What every Intune FE call goes through: shard, bearer token, api-version, JSON body.

Shared by ScepActions and the PKI connector. Order of checks: an old shard is
404 before anything else (the service is simply not there), then
authentication, then the api-version header, then the body.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

from fastapi import Request

from .errors import FeError
from .state import INTUNE_APP_ID, INTUNE_AUDIENCE, SCEP_ROLE, SimulatorState
from .tokens import TokenRejected, verify_bearer

__all__ = ["FieldTypes", "authorize", "check_fields", "read_wrapped", "require_shard"]

_INTUNE_AUDIENCES = (INTUNE_AUDIENCE, INTUNE_AUDIENCE.rstrip("/"), INTUNE_APP_ID)
_INT64 = (-(2**63), 2**63 - 1)
# Field name -> accepted JSON types (None allows null).
FieldTypes = Mapping[str, tuple[type | None, ...]]


def require_shard(state: SimulatorState, shard: str) -> None:
    if shard != state.knobs.shard:
        raise FeError(404, "NotFound", "The requested resource does not exist on this shard.")


def authorize(
    state: SimulatorState, request: Request, *, api_versions: Collection[str], need_role: bool
) -> dict[str, Any]:
    """The caller's token claims, after the checks Intune's gateway makes."""
    try:
        claims = verify_bearer(state, request.headers.get("authorization"), _INTUNE_AUDIENCES)
    except TokenRejected as rejected:
        headers = {"WWW-Authenticate": "Bearer"}
        raise FeError(401, "Unauthorized", rejected.detail, None, **headers) from rejected
    if need_role and SCEP_ROLE not in claims.get("roles", []):
        status = state.knobs.missing_role_status
        raise FeError(
            status,
            "Unauthorized" if status == 401 else "Forbidden",
            f"The caller does not have the '{SCEP_ROLE}' role.",
        )
    version = request.headers.get("api-version")
    if version is None:
        raise FeError(400, "BadRequest", "The 'api-version' header is required.")
    if version not in api_versions:
        raise FeError(400, "BadRequest", f"The api-version '{version}' is not supported.")
    return claims


async def read_wrapped(request: Request, wrapper: str, *, strict: bool) -> Any:
    """The value under the single top-level `wrapper` key of a JSON body."""
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise FeError(400, "BadRequest", "The request body is not valid JSON.") from exc
    if not isinstance(body, dict) or wrapper not in body or body[wrapper] is None:
        raise FeError(400, "BadRequest", f"The parameter '{wrapper}' is missing or null.")
    extra = set(body) - {wrapper}
    if strict and extra:
        raise FeError(400, "BadRequest", f"Unexpected top-level properties: {sorted(extra)}.")
    return body[wrapper]


def check_fields(
    value: Any, required: FieldTypes, optional: FieldTypes, *, what: str, strict: bool
) -> dict[str, Any]:
    """Type-check a JSON object the way OData binds it: missing/mistyped -> 400."""
    if not isinstance(value, dict):
        raise FeError(400, "BadRequest", f"'{what}' must be a JSON object.")
    for name, types in required.items():
        if name not in value:
            raise FeError(400, "BadRequest", f"'{what}.{name}' is required.")
        _check_type(value[name], types, f"{what}.{name}")
    for name, types in optional.items():
        if name in value:
            _check_type(value[name], types, f"{what}.{name}")
    unknown = set(value) - set(required) - set(optional)
    if strict and unknown:
        # OData: "The property 'x' does not exist on type '…'".
        raise FeError(
            400,
            "BadRequest",
            f"The property '{sorted(unknown)[0]}' does not exist on type '{what}'.",
        )
    return value


def _check_type(item: Any, types: tuple[type | None, ...], where: str) -> None:
    if item is None:
        if None in types:
            return
        raise FeError(400, "BadRequest", f"'{where}' must not be null.")
    if isinstance(item, bool) and bool not in types:
        raise FeError(400, "BadRequest", f"'{where}' has the wrong type.")
    if not any(t is not None and isinstance(item, t) for t in types):
        raise FeError(400, "BadRequest", f"'{where}' has the wrong type.")
    if isinstance(item, int) and not isinstance(item, bool) and not _INT64[0] <= item <= _INT64[1]:
        raise FeError(400, "BadRequest", f"'{where}' does not fit in an int64.")

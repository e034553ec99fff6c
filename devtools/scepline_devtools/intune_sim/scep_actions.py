"""Fake ScepRequestValidationFEService: validateRequest and the two notifications.

Business outcomes are HTTP 200 with a ``code``; only protocol problems (auth,
api-version, body shape) are 4xx, as with the real service
(docs/specs/intune-api.md, "Calls, results and errors").
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .challenges import evaluate
from .entra import base_url
from .errors import FeError
from .fe_common import FieldTypes, authorize, check_fields, read_wrapped, require_shard
from .models import RecordedNotification
from .state import SCEP_SERVICE_PATH, SimulatorState

__all__ = ["action_result", "scep_router"]

_STR = (str,)
_VALIDATE: FieldTypes = {"transactionId": _STR, "certificateRequest": _STR, "callerInfo": _STR}
_SUCCESS: FieldTypes = {
    "transactionId": _STR,
    "certificateRequest": _STR,
    "certificateThumbprint": _STR,
    "certificateSerialNumber": _STR,
    "certificateExpirationDateUtc": _STR,
    "issuingCertificateAuthority": _STR,
    "callerInfo": _STR,
}
# Added on the ref lib's master in 2020; older callers omit them or send null.
_SUCCESS_OPTIONAL: FieldTypes = {
    "caConfiguration": (str, None),
    "certificateAuthority": (str, None),
}
_FAILURE: FieldTypes = {
    "transactionId": _STR,
    "certificateRequest": _STR,
    "hResult": (int,),
    "errorDescription": _STR,
    "callerInfo": _STR,
}
_MAX_ERROR_DESCRIPTION = 255


def action_result(
    state: SimulatorState, base: str, shard: str, code: str, description: str = ""
) -> dict[str, Any]:
    """The 200 body of every ScepAction (errorDescription present even on success)."""
    host = (state.knobs.intune_base_url or base).rstrip("/")
    service = uuid.uuid5(uuid.NAMESPACE_URL, f"scep:{state.tenant_id}")
    return {
        "@odata.context": (
            f"{host}/{shard}/RACerts/StatelessScepRequestValidationService/{service}/$metadata"
            "#microsoft.management.services.scepRequestValidationService.api.scepActionResult"
        ),
        "code": code,
        "errorDescription": description,
    }


scep_router = APIRouter()


@scep_router.post("/{shard}/" + SCEP_SERVICE_PATH + "/ScepActions/{action}")
async def scep_action(shard: str, action: str, request: Request) -> JSONResponse:
    state: SimulatorState = request.app.state.simulator
    require_shard(state, shard)
    if action not in ("validateRequest", "successNotification", "failureNotification"):
        raise FeError(404, "NotFound", f"No action '{action}' on ScepActions.")
    claims = authorize(state, request, api_versions=state.knobs.scep_api_versions, need_role=True)
    strict = state.knobs.reject_unknown_properties
    if action == "validateRequest":
        fields = check_fields(
            await read_wrapped(request, "request", strict=strict),
            _VALIDATE,
            {},
            what="request",
            strict=strict,
        )
        verdict = evaluate(state, fields["certificateRequest"], claims["tid"])
        if verdict.code == "Success":
            with state.lock:
                state.validated[fields["transactionId"]] = fields["certificateRequest"]
        code, description = verdict.code, verdict.description
    else:
        code, description = await _notification(state, request, action, strict=strict)
    return JSONResponse(
        action_result(state, base_url(request), shard, code, description),
        headers={"client-request-id": request.headers.get("client-request-id", "")},
    )


async def _notification(
    state: SimulatorState, request: Request, action: str, *, strict: bool
) -> tuple[str, str]:
    success = action == "successNotification"
    fields = check_fields(
        await read_wrapped(request, "notification", strict=strict),
        _SUCCESS if success else _FAILURE,
        _SUCCESS_OPTIONAL if success else {},
        what="notification",
        strict=strict,
    )
    if not success and len(fields["errorDescription"]) > _MAX_ERROR_DESCRIPTION:
        raise FeError(
            400,
            "BadRequest",
            f"'notification.errorDescription' is longer than {_MAX_ERROR_DESCRIPTION} characters.",
        )
    code, description = "Success", ""
    known = state.validated.get(fields["transactionId"]) == fields["certificateRequest"]
    if not known and state.knobs.unknown_transaction == "strict":
        code = state.knobs.unknown_transaction_code
        description = (
            f"No successful validation for transaction '{fields['transactionId']}' "
            "with this certificate request."
        )
    with state.lock:
        state.notifications.append(
            RecordedNotification(
                kind="success" if success else "failure",
                fields=dict(fields),
                code=code,
                at=state.clock.now(),
            )
        )
    return code, description

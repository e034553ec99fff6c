"""Fake PkiConnectorFEService: revocation requests out, revocation results in
(docs/specs/intune-api.md, "Revocation requests").

Requests are queued by the admin API, usually from recorded success
notifications; they stay pending (and are downloaded again) until a result for
their requestContext is uploaded, the way a work queue with at-least-once
delivery behaves.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .entra import base_url
from .errors import FeError
from .fe_common import authorize, check_fields, read_wrapped, require_shard
from .models import RevocationRequest, RevocationResult, RevocationSeed
from .state import PKI_SERVICE_PATH, SimulatorState

__all__ = ["ERROR_CODES", "parse_error_code", "pki_router", "queue_revocations"]

ERROR_CODES = {
    "None": 0,
    "NonRetryableService": 4000,
    "DataSerialization": 4001,
    "ParameterDataInvalid": 4002,
    "Cryptography": 4003,
    "CertificateNotFound": 4004,
    "Conflict": 4005,
    "NotSupported": 4006,
    "PayloadTooLarge": 4007,
    "RetryableService": 4100,
    "ServiceUnavailable": 4101,
    "ServiceTooBusy": 4102,
    "Authentication": 4103,
}


def parse_error_code(value: Any) -> int:
    """Java and EJBCA send "4004"; C# sends "CertificateNotFound". Accept both."""
    if isinstance(value, int) and not isinstance(value, bool) and value in ERROR_CODES.values():
        return value
    if isinstance(value, str):
        if value in ERROR_CODES:
            return ERROR_CODES[value]
        if value.isdigit() and int(value) in ERROR_CODES.values():
            return int(value)
    raise FeError(400, "BadRequest", f"Unknown revocation errorCode {value!r}.")


def queue_revocations(state: SimulatorState, seed: RevocationSeed) -> list[RevocationRequest]:
    """Queue revocations for matching success notifications (or one explicit entry)."""
    with state.lock:
        issued = [n.fields for n in state.notifications if n.kind == "success"]
        chosen = [
            f
            for f in issued
            if seed.all_issued
            or (seed.transaction_id is not None and f["transactionId"] == seed.transaction_id)
            or (
                seed.serial_number is not None
                and f["certificateSerialNumber"].lower() == seed.serial_number.lower()
            )
        ]
        entries = [
            # Assumed: Intune echoes what the CA sent in its success notification.
            (
                f["certificateSerialNumber"],
                f["issuingCertificateAuthority"],
                f.get("caConfiguration") or f["issuingCertificateAuthority"],
            )
            for f in chosen
        ]
        if not entries and seed.serial_number and seed.issuer_name:
            entries = [
                (seed.serial_number, seed.issuer_name, seed.ca_configuration or seed.issuer_name)
            ]
        queued = []
        for serial, issuer, ca_configuration in entries:
            request = RevocationRequest(
                request_context=str(uuid.uuid4()),
                serial_number=serial,
                issuer_name=issuer,
                ca_configuration=ca_configuration,
            )
            state.revocations[request.request_context] = request
            queued.append(request)
        return queued


pki_router = APIRouter()


@pki_router.post("/{shard}/" + PKI_SERVICE_PATH + "/CertificateAuthorityRequests/{action}")
async def pki_action(shard: str, action: str, request: Request) -> JSONResponse:
    state: SimulatorState = request.app.state.simulator
    require_shard(state, shard)
    if action not in ("downloadRevocationRequests", "uploadRevocationResults"):
        raise FeError(404, "NotFound", f"No action '{action}' on CertificateAuthorityRequests.")
    knobs = state.knobs
    authorize(
        state, request, api_versions=knobs.pki_api_versions, need_role=knobs.pki_requires_role
    )
    strict = knobs.reject_unknown_properties
    if action == "downloadRevocationRequests":
        return JSONResponse(await _download(state, request, shard, strict=strict))
    return JSONResponse(await _upload(state, request, strict=strict))


async def _download(
    state: SimulatorState, request: Request, shard: str, *, strict: bool
) -> dict[str, Any]:
    parameters = check_fields(
        await read_wrapped(request, "downloadParameters", strict=strict),
        {"maxRequests": (int,)},
        {"issuerName": (str, None)},
        what="downloadParameters",
        strict=strict,
    )
    limit = parameters["maxRequests"]
    if not 1 <= limit <= 500:
        raise FeError(400, "BadRequest", "maxRequests must be between 1 and 500.")
    issuer = parameters.get("issuerName")
    with state.lock:
        pending = [
            r
            for r in state.revocations.values()
            if issuer is None or r.issuer_name.lower() == issuer.lower()
        ][:limit]
    host = (state.knobs.intune_base_url or base_url(request)).rstrip("/")
    return {
        "@odata.context": (
            f"{host}/{shard}/RACerts/StatelessPkiConnectorService/$metadata"
            "#Collection(microsoft.management.services.api.caRevocationRequest)"
        ),
        "value": [
            {
                "requestContext": r.request_context,
                "serialNumber": r.serial_number,
                "issuerName": r.issuer_name,
                "caConfiguration": r.ca_configuration,
            }
            for r in pending
        ],
    }


async def _upload(state: SimulatorState, request: Request, *, strict: bool) -> dict[str, Any]:
    results = await read_wrapped(request, "results", strict=strict)
    if not isinstance(results, list):
        raise FeError(400, "BadRequest", "'results' must be an array.")
    parsed = []
    for item in results:
        fields = check_fields(
            item,
            {"requestContext": (str,), "succeeded": (bool,), "errorCode": (str, int)},
            {"errorMessage": (str, None)},
            what="results[]",
            strict=strict,
        )
        parsed.append((fields, parse_error_code(fields["errorCode"])))
    with state.lock:
        unknown = [f for f, _ in parsed if f["requestContext"] not in state.revocations]
        if unknown and state.knobs.unknown_request_context == "bad_request":
            raise FeError(400, "BadRequest", "Unknown requestContext.")
        for fields, error_code in parsed:
            known = state.revocations.pop(fields["requestContext"], None) is not None
            state.revocation_results.append(
                RevocationResult(
                    request_context=fields["requestContext"],
                    succeeded=fields["succeeded"],
                    error_code=error_code,
                    error_message=fields.get("errorMessage"),
                    known=known,
                )
            )
    value = not (unknown and state.knobs.unknown_request_context == "value_false")
    return {"value": value}

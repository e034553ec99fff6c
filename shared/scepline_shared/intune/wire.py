"""The JSON bodies of the three ScepActions and the result they answer with, and
of the revocation calls (download requests, upload results;
``docs/specs/intune-api.md``, "Revocation requests").

Field formats follow ``docs/specs/intune-api.md``, "Field formats": the CSR as
standard padded base64 of the client's own DER (the same string on all three
calls), thumbprint uppercase hex SHA-1, serial lowercase hex as the store
spells it (what revocations will be matched against), expiry ISO-8601 UTC with
``Z``, the issuer DN as the issuing CA.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from .errors import IntuneProtocolError, IntuneResult

__all__ = [
    "MAX_ERROR_DESCRIPTION",
    "RevocationError",
    "RevocationRequest",
    "RevocationResult",
    "certificate_request",
    "download_revocations_body",
    "expiration",
    "failure_body",
    "parse_result",
    "parse_revocation_requests",
    "parse_upload_accepted",
    "success_body",
    "thumbprint",
    "upload_revocation_results_body",
    "validate_body",
]

MAX_ERROR_DESCRIPTION = 255
_INT64 = (-(2**63), 2**63 - 1)


def certificate_request(csr_der: bytes) -> str:
    return base64.b64encode(csr_der).decode("ascii")


def thumbprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - an identifier


def expiration(certificate: x509.Certificate) -> str:
    return certificate.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def validate_body(*, transaction_id: str, csr_der: bytes, caller_info: str) -> dict[str, Any]:
    return {
        "request": {
            "transactionId": transaction_id,
            "certificateRequest": certificate_request(csr_der),
            "callerInfo": caller_info,
        }
    }


def success_body(
    *, transaction_id: str, csr_der: bytes, certificate: x509.Certificate, caller_info: str
) -> dict[str, Any]:
    issuer = certificate.issuer.rfc4514_string()
    return {
        "notification": {
            "transactionId": transaction_id,
            "certificateRequest": certificate_request(csr_der),
            "certificateThumbprint": thumbprint(certificate),
            "certificateSerialNumber": format(certificate.serial_number, "x"),
            "certificateExpirationDateUtc": expiration(certificate),
            "issuingCertificateAuthority": issuer,
            "callerInfo": caller_info,
            # Optional; EJBCA sends the issuer DN in all three, and Intune appears to
            # echo them back on revocation requests
            # (docs/specs/intune-api.md, "Revocation requests").
            "caConfiguration": issuer,
            "certificateAuthority": issuer,
        }
    }


def failure_body(
    *, transaction_id: str, csr_der: bytes, hresult: int, description: str, caller_info: str
) -> dict[str, Any]:
    if not _INT64[0] <= hresult <= _INT64[1]:
        raise ValueError(f"hResult {hresult} does not fit in an int64")
    return {
        "notification": {
            "transactionId": transaction_id,
            "certificateRequest": certificate_request(csr_der),
            "hResult": hresult,
            "errorDescription": description[:MAX_ERROR_DESCRIPTION],
            "callerInfo": caller_info,
        }
    }


def parse_result(response: httpx.Response, activity_id: str) -> IntuneResult:
    """The ``code``/``errorDescription`` of a 200; IntuneProtocolError if there is none."""
    try:
        body = response.json()
    except ValueError:
        body = None
    code = body.get("code") if isinstance(body, dict) else None
    if not isinstance(code, str) or not code:
        raise IntuneProtocolError(
            "Intune answered 200 without a result code", activity_id=activity_id
        )
    description = body.get("errorDescription") if isinstance(body, dict) else None
    return IntuneResult(code, description if isinstance(description, str) else "", activity_id)


class RevocationError(IntEnum):
    """The errorCode of a revocation result (docs/specs/intune-api.md, "Revocation requests");
    41xx ask Intune to retry."""

    NONE = 0
    NON_RETRYABLE_SERVICE = 4000
    PARAMETER_DATA_INVALID = 4002
    CERTIFICATE_NOT_FOUND = 4004
    CONFLICT = 4005
    RETRYABLE_SERVICE = 4100


@dataclass(frozen=True)
class RevocationRequest:
    """One certificate Intune wants revoked (a device retired, wiped, or out of scope)."""

    request_context: str
    serial_number: str
    issuer_name: str
    ca_configuration: str


@dataclass(frozen=True)
class RevocationResult:
    request_context: str
    error: RevocationError
    message: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is RevocationError.NONE


def download_revocations_body(*, max_requests: int, issuer_name: str | None) -> dict[str, Any]:
    if not 1 <= max_requests <= 500:
        raise ValueError("maxRequests must be between 1 and 500")
    return {"downloadParameters": {"maxRequests": max_requests, "issuerName": issuer_name}}


def parse_revocation_requests(
    response: httpx.Response, activity_id: str
) -> list[RevocationRequest]:
    """The ``value`` list of a downloadRevocationRequests answer."""
    try:
        entries = response.json()["value"]
        if not isinstance(entries, list):
            raise TypeError("value is not a list")
        return [
            RevocationRequest(
                request_context=str(entry["requestContext"]),
                serial_number=str(entry["serialNumber"]),
                issuer_name=str(entry.get("issuerName") or ""),
                ca_configuration=str(entry.get("caConfiguration") or ""),
            )
            for entry in entries
        ]
    except (ValueError, KeyError, TypeError) as error:
        raise IntuneProtocolError(
            f"downloadRevocationRequests: unreadable answer ({error})", activity_id=activity_id
        ) from error


def upload_revocation_results_body(results: list[RevocationResult]) -> dict[str, Any]:
    # errorCode as the numeric string, as Intune's Java library and EJBCA send it.
    return {
        "results": [
            {
                "requestContext": result.request_context,
                "succeeded": result.succeeded,
                "errorCode": str(int(result.error)),
                "errorMessage": (result.message or "")[:MAX_ERROR_DESCRIPTION] or None,
            }
            for result in results
        ]
    }


def parse_upload_accepted(response: httpx.Response) -> bool:
    """``{"value": true}`` and nothing else means Intune took the results."""
    try:
        return response.json().get("value") is True
    except (ValueError, AttributeError):
        return False

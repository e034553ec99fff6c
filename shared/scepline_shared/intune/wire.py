"""The JSON bodies of the three ScepActions and the result they answer with.

Field formats follow spec §4: the CSR as standard padded base64 of the client's
own DER (the same string on all three calls), thumbprint uppercase hex SHA-1,
serial lowercase hex as the store spells it (what revocations will be matched
against), expiry ISO-8601 UTC with ``Z``, the issuer DN as the issuing CA.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from .errors import IntuneProtocolError, IntuneResult

__all__ = [
    "MAX_ERROR_DESCRIPTION",
    "certificate_request",
    "expiration",
    "failure_body",
    "parse_result",
    "success_body",
    "thumbprint",
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
            # echo them back on revocation requests (spec §3.4).
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

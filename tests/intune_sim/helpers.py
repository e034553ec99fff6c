"""Test-side helpers: CSRs carrying a challenge, and a bare Intune caller.

``Caller`` is deliberately naive (raw httpx, no retries, no caching): it exists
to pin down the simulator's wire behaviour, not to model the product's client.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from functools import cache
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AttributeOID

from scepline_devtools.intune_sim import GRAPH_SCOPE, INTUNE_APP_ID, INTUNE_SCOPE
from tests.intune_sim.fixtures import IntuneSim
from tests.support.pki import self_signed

SCEP_API_VERSION = "2018-02-20"
PKI_API_VERSION = "5019-05-05"
CLIENT_AUTH = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH


@cache
def rsa_key(label: str = "device", bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@cache
def ec_key(label: str = "device") -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def csr(
    *,
    challenge: str | None,
    subject: str = "CN=device-1",
    sans: Sequence[x509.GeneralName] = (),
    eku: Sequence[x509.ObjectIdentifier] | None = None,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None = None,
) -> str:
    """Base64 DER PKCS#10, as the CA sends it in certificateRequest."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name.from_rfc4514_string(subject)
    )
    if challenge is not None:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    request = builder.sign(key or rsa_key(), hashes.SHA256())
    return base64.b64encode(request.public_bytes(serialization.Encoding.DER)).decode()


def certificate_credential(label: str) -> tuple[str, str, x509.Certificate]:
    """An app credential: (private key PEM, certificate PEM, certificate)."""
    key = rsa_key(label)
    certificate = self_signed(key, label)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM).decode(), certificate


class Caller:
    def __init__(self, sim: IntuneSim) -> None:
        self.sim = sim
        self.http = sim.http(timeout=10)

    def token_response(self, scope: str = INTUNE_SCOPE, **form: str | None) -> httpx.Response:
        body = {
            "grant_type": "client_credentials",
            "client_id": self.sim.client_id,
            "client_secret": self.sim.client_secret,
            "scope": scope,
            **form,
        }
        body = {k: v for k, v in body.items() if v is not None}  # None: leave the field out
        return self.http.post(f"{self.sim.authority}/oauth2/v2.0/token", data=body)

    def token(self, scope: str = INTUNE_SCOPE, **form: str) -> str:
        response = self.token_response(scope, **form)
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def endpoints_response(self, token: str | None = None) -> httpx.Response:
        url = f"{self.sim.graph_url}/v1.0/servicePrincipals/appId={INTUNE_APP_ID}/endpoints"
        bearer = token if token is not None else self.token(GRAPH_SCOPE)
        headers = {"client-request-id": str(uuid.uuid4())}
        if bearer:  # "" sends no Authorization header at all
            headers["Authorization"] = f"Bearer {bearer}"
        return self.http.get(url, headers=headers)

    def discover(self) -> dict[str, str]:
        response = self.endpoints_response()
        assert response.status_code == 200, response.text
        return {e["providerName"]: e["uri"] for e in response.json()["value"]}

    def post(
        self,
        url: str,
        body: Any,
        *,
        token: str | None = None,
        api_version: str | None = SCEP_API_VERSION,
        **headers: str,
    ) -> httpx.Response:
        bearer = token if token is not None else self.token()
        all_headers = {"client-request-id": str(uuid.uuid4()), **headers}
        if bearer:  # "" sends no Authorization header at all
            all_headers["Authorization"] = f"Bearer {bearer}"
        if api_version is not None:
            all_headers["api-version"] = api_version
        return self.http.post(url, json=body, headers=all_headers)

    def scep(self, action: str, body: Any, **options: Any) -> httpx.Response:
        base = self.discover()["ScepRequestValidationFEService"]
        return self.post(f"{base}/ScepActions/{action}", body, **options)

    def pki(self, action: str, body: Any, **options: Any) -> httpx.Response:
        base = self.discover()["PkiConnectorFEService"]
        options.setdefault("api_version", PKI_API_VERSION)
        return self.post(f"{base}/CertificateAuthorityRequests/{action}", body, **options)

    def validate(self, certificate_request: str, transaction_id: str = "tx-1") -> dict[str, Any]:
        body = {
            "request": {
                "transactionId": transaction_id,
                "certificateRequest": certificate_request,
                "callerInfo": "scepline-tests/1.0",
            }
        }
        response = self.scep("validateRequest", body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


def success_notification(transaction_id: str, certificate_request: str, **fields: Any) -> Any:
    notification = {
        "transactionId": transaction_id,
        "certificateRequest": certificate_request,
        "certificateThumbprint": "A1B2C3D4E5F60718293A4B5C6D7E8F9012345678",
        "certificateSerialNumber": "1a2b3c",
        "certificateExpirationDateUtc": "2027-01-01T00:00:00Z",
        "issuingCertificateAuthority": "CN=scepline test CA",
        "callerInfo": "scepline-tests/1.0",
        "caConfiguration": "CN=scepline test CA",
        "certificateAuthority": "CN=scepline test CA",
        **fields,
    }
    return {"notification": notification}


def failure_notification(transaction_id: str, certificate_request: str, **fields: Any) -> Any:
    notification = {
        "transactionId": transaction_id,
        "certificateRequest": certificate_request,
        "hResult": -2147418113,
        "errorDescription": "signing failed",
        "callerInfo": "scepline-tests/1.0",
        **fields,
    }
    return {"notification": notification}

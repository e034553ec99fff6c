"""A SCEP client over HTTP, built on the codec.

Used by the benchmarks (load generation) and the test suite; a developer tool,
not part of the product's wheel. It speaks like a careful RFC 8894 client: POST by
default, GET with standard base64 on request, CertPoll for PENDING.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import AttributeOID, NameOID

from scepline_shared.ca import key_usage
from scepline_shared.scep import (
    CertRep,
    ContentEncryption,
    Digest,
    MessageType,
    build_request,
    issuer_and_serial,
    issuer_and_subject,
    parse_degenerate,
    read_cert_rep,
)

__all__ = ["Requester", "ScepClient", "ScepHttpError", "build_csr", "self_signed_requester"]


@dataclass(frozen=True)
class Requester:
    """The key and certificate that sign a request (a transient self-signed
    certificate, or the old certificate when renewing)."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate


class ScepHttpError(Exception):
    def __init__(self, status_code: int, body: str) -> None:
        super().__init__(f"HTTP {status_code}: {body.strip()[:200]}")
        self.status_code = status_code
        self.body = body


def self_signed_requester(
    key: rsa.RSAPrivateKey, subject: x509.Name | str = "SCEP SIGNER"
) -> Requester:
    name = (
        subject
        if isinstance(subject, x509.Name)
        else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    )
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            key_usage(digital_signature=True, key_encipherment=True),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Requester(key=key, certificate=certificate)


def build_csr(
    key: rsa.RSAPrivateKey,
    subject: x509.Name,
    *,
    challenge: str | None = None,
    sans: Sequence[x509.GeneralName] = (),
) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if challenge is not None:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(key, hashes.SHA256())


def transaction_id_for(
    source: x509.Certificate | x509.CertificateSigningRequest,
) -> str:
    """Hex SHA-256 of the public key, as RFC 8894 §3.2.1.1 suggests."""
    digest = hashes.Hash(hashes.SHA256())
    public_key = source.public_key()
    digest.update(public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    return digest.finalize().hex().upper()


class ScepClient:
    def __init__(
        self,
        url: str,
        *,
        http: httpx.AsyncClient | None = None,
        method: str = "POST",
        encryption: ContentEncryption = ContentEncryption.AES128_CBC,
        digest: Digest = Digest.SHA256,
    ) -> None:
        self.url = url
        self._http = http or httpx.AsyncClient(timeout=60)
        self.method = method
        self.encryption = encryption
        self.digest = digest
        self._ra: x509.Certificate | None = None
        self._cas: list[x509.Certificate] = []

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get_ca_caps(self) -> list[str]:
        response = await self._get("GetCACaps")
        return [line.strip() for line in response.text.splitlines() if line.strip()]

    async def get_ca_certs(self) -> list[x509.Certificate]:
        response = await self._get("GetCACert")
        if response.headers.get("content-type", "").startswith("application/x-x509-ca-cert"):
            certificates = [x509.load_der_x509_certificate(response.content)]
        else:
            certificates, _ = parse_degenerate(response.content)
        self._cas = [c for c in certificates if _is_ca(c)]
        encryption_certs = [c for c in certificates if _can_encrypt(c) and not _is_ca(c)]
        self._ra = encryption_certs[0] if encryption_certs else self._cas[0]
        return certificates

    @property
    def ra_certificate(self) -> x509.Certificate:
        if self._ra is None:
            raise RuntimeError("call get_ca_certs() first")
        return self._ra

    async def enrol(
        self,
        csr: x509.CertificateSigningRequest,
        requester: Requester,
        *,
        transaction_id: str | None = None,
        message_type: MessageType = MessageType.PKCS_REQ,
    ) -> CertRep:
        return await self.exchange(
            message_type,
            csr.public_bytes(Encoding.DER),
            requester,
            transaction_id=transaction_id or transaction_id_for(csr),
        )

    async def poll(self, requester: Requester, transaction_id: str, subject: x509.Name) -> CertRep:
        issuer = self._issuing_ca().subject
        return await self.exchange(
            MessageType.CERT_POLL,
            issuer_and_subject(issuer, subject),
            requester,
            transaction_id=transaction_id,
        )

    async def get_cert(self, requester: Requester, serial_number: int) -> CertRep:
        data = issuer_and_serial(self._issuing_ca().subject, serial_number)
        return await self.exchange(MessageType.GET_CERT, data, requester)

    async def get_crl(self, requester: Requester, certificate: x509.Certificate) -> CertRep:
        data = issuer_and_serial(certificate.issuer, certificate.serial_number)
        return await self.exchange(MessageType.GET_CRL, data, requester)

    async def exchange(
        self,
        message_type: MessageType,
        message_data: bytes,
        requester: Requester,
        *,
        transaction_id: str | None = None,
    ) -> CertRep:
        if self._ra is None:
            await self.get_ca_certs()
        nonce = os.urandom(16)
        der = build_request(
            message_type=message_type,
            transaction_id=transaction_id or os.urandom(16).hex(),
            message_data=message_data,
            signer_key=requester.key,
            signer_certificate=requester.certificate,
            recipient=self.ra_certificate,
            encryption=self.encryption,
            digest=self.digest,
            sender_nonce=nonce,
        )
        response = await self.send(der)
        return read_cert_rep(
            response.content,
            expected_signer=self.ra_certificate,
            sender_nonce=nonce,
            client_key=requester.key,
            client_certificate=requester.certificate,
        )

    async def send(self, der: bytes, *, method: str | None = None) -> httpx.Response:
        if (method or self.method) == "GET":
            message = urllib.parse.quote(base64.b64encode(der).decode(), safe="")
            response = await self._http.get(f"{self.url}?operation=PKIOperation&message={message}")
        else:
            response = await self._http.post(
                f"{self.url}?operation=PKIOperation",
                content=der,
                headers={"Content-Type": "application/x-pki-message"},
            )
        if response.status_code != 200:
            raise ScepHttpError(response.status_code, response.text)
        return response

    async def _get(self, operation: str) -> httpx.Response:
        response = await self._http.get(self.url, params={"operation": operation})
        if response.status_code != 200:
            raise ScepHttpError(response.status_code, response.text)
        return response

    def _issuing_ca(self) -> x509.Certificate:
        if not self._cas:
            raise RuntimeError("call get_ca_certs() first")
        return self._cas[0]


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _can_encrypt(certificate: x509.Certificate) -> bool:
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return usage.key_encipherment

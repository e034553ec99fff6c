"""Compact JWS with RSA, just enough for Entra tokens and client assertions.

Implemented on ``cryptography`` so the simulator needs no JWT library: it signs
RS256 and verifies RS256 (EJBCA, MSAL with a SHA-1 thumbprint) and PS256
(MSAL 1.39 with ``public_certificate``).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = ["JwsError", "ParsedJws", "b64url_decode", "b64url_encode", "parse", "sign_rs256"]


class JwsError(Exception):
    """Malformed token, unsupported algorithm or bad signature."""


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise JwsError("not base64url") from exc


def sign_rs256(claims: dict[str, Any], key: rsa.RSAPrivateKey, headers: dict[str, Any]) -> str:
    header = {"typ": "JWT", "alg": "RS256", **headers}
    signing_input = ".".join(
        b64url_encode(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url_encode(signature)}"


@dataclass(frozen=True)
class ParsedJws:
    """A token split and decoded, its signature not yet checked."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes

    def verify(self, public_key: rsa.RSAPublicKey) -> None:
        alg = self.header.get("alg")
        if alg == "RS256":
            pad: padding.AsymmetricPadding = padding.PKCS1v15()
        elif alg == "PS256":
            # RFC 7518 §3.5: salt as long as the hash (PyJWT, hence MSAL, does this).
            pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        else:
            raise JwsError(f"unsupported alg {alg!r}")
        try:
            public_key.verify(self.signature, self.signing_input, pad, hashes.SHA256())
        except InvalidSignature as exc:
            raise JwsError("signature does not verify") from exc


def parse(token: str) -> ParsedJws:
    parts = token.split(".")
    if len(parts) != 3:
        raise JwsError("not a compact JWS")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
    except ValueError as exc:
        raise JwsError("header or claims are not JSON") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JwsError("header and claims must be JSON objects")
    return ParsedJws(
        header=header,
        claims=claims,
        signing_input=f"{parts[0]}.{parts[1]}".encode("ascii"),
        signature=b64url_decode(parts[2]),
    )

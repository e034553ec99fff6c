"""Simulated Intune challenges and the checks validateRequest makes with them.

A real challenge is an encrypted, signed blob naming the expected CSR contents,
device, tenant and expiry (docs/specs/intune-api.md, "The device's challenge").
Ours is base64 of HMAC-signed JSON with the same content: opaque to the CA,
checkable here, impossible to forge in a test without the simulator's key.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from typing import Any

from asn1crypto import core as asn1_core
from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AttributeOID, ObjectIdentifier

from .models import ChallengeSpec, MintedChallenge
from .state import ChallengeRecord, SimulatorState

__all__ = ["Verdict", "evaluate", "mint"]

_UPN = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Verdict:
    code: str
    description: str = ""
    challenge_id: str | None = None


class _Reject(Exception):
    def __init__(self, code: str, description: str) -> None:
        super().__init__(code)
        self.code, self.description = code, description


def _sign(key: bytes, payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def mint(state: SimulatorState, spec: ChallengeSpec) -> MintedChallenge:
    now = state.clock.now()
    expires = now + dt.timedelta(seconds=spec.valid_for_seconds)
    challenge_id = uuid.uuid4().hex
    payload: dict[str, Any] = {
        "id": challenge_id,
        "tid": spec.tenant_id or state.tenant_id,
        "did": spec.device_id,
        "uid": spec.user_id,
        "sub": spec.subject,
        "san": spec.sans,
        "eku": spec.eku,
        "ks": spec.key_size,
        "iat": now.timestamp(),
        "exp": expires.timestamp(),
        "fc": spec.force_code,
    }
    document = {"v": 1, "p": payload, "s": _sign(state.challenge_key, payload)}
    text = base64.b64encode(json.dumps(document, separators=(",", ":")).encode()).decode()
    with state.lock:
        state.challenges[challenge_id] = ChallengeRecord()
    return MintedChallenge(id=challenge_id, challenge=text, expires_at=expires)


def _decode_challenge(state: SimulatorState, text: str) -> dict[str, Any]:
    try:
        document = json.loads(base64.b64decode(text, validate=True))
        payload, signature = document["p"], document["s"]
        if not isinstance(payload, dict) or not isinstance(signature, str):
            raise TypeError("malformed challenge document")
        if not {"id", "tid", "iat", "exp"} <= payload.keys():
            raise KeyError("challenge payload lacks a field")
    except (ValueError, TypeError, KeyError, binascii.Error) as exc:
        raise _Reject("ChallengeDecodingError", "The challenge could not be decoded.") from exc
    if not hmac.compare_digest(signature, _sign(state.challenge_key, payload)):
        raise _Reject("SignatureValidationFailed", "Challenge signature validation failed.")
    return payload


def _load_csr(certificate_request: str) -> x509.CertificateSigningRequest:
    try:
        der = base64.b64decode(certificate_request, validate=True)
        try:
            csr = x509.load_der_x509_csr(der)
        except ValueError:
            # BER from some clients (unsorted SET): re-encode as Intune's parser would accept.
            csr = x509.load_der_x509_csr(asn1_csr.CertificationRequest.load(der).dump(force=True))
        if not csr.is_signature_valid:
            raise ValueError("CSR signature does not verify")
    except (ValueError, TypeError, binascii.Error) as exc:
        raise _Reject(
            "CertificateRequestDecodingFailed", f"Failed to decode certificate request: {exc}"
        ) from exc
    return csr


def _san_strings(csr: x509.CertificateSigningRequest) -> set[str] | None:
    try:
        names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    found: set[str] = set()
    for name in names:
        if isinstance(name, x509.DNSName):
            found.add(f"DNS:{name.value.lower()}")
        elif isinstance(name, x509.RFC822Name):
            found.add(f"email:{name.value}")
        elif isinstance(name, x509.UniformResourceIdentifier):
            found.add(f"URI:{name.value}")
        elif isinstance(name, x509.IPAddress):
            found.add(f"IP:{name.value}")
        elif isinstance(name, x509.OtherName) and name.type_id == _UPN:
            found.add(f"UPN:{asn1_core.UTF8String.load(name.value).native}")
        else:
            found.add(f"{type(name).__name__}:{name.value!s}")
    return found


def _normalise_san(text: str) -> str:
    kind, _, value = text.partition(":")
    kind = {"dns": "DNS", "email": "email", "uri": "URI", "ip": "IP", "upn": "UPN"}.get(
        kind.lower(), kind
    )
    return f"{kind}:{value.lower() if kind == 'DNS' else value}"


def _key_size(csr: x509.CertificateSigningRequest) -> int | None:
    key = csr.public_key()
    return key.key_size if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) else None


def _check_csr(csr: x509.CertificateSigningRequest, payload: dict[str, Any]) -> None:
    if payload.get("sub") is not None:
        expected = x509.Name.from_rfc4514_string(payload["sub"]).rfc4514_string()
        actual = csr.subject.rfc4514_string()
        if not actual:
            raise _Reject("SubjectNameMissing", "The CSR has no subject name.")
        if actual != expected:
            raise _Reject(
                "SubjectNameMismatch", f"Subject name '{actual}' does not match '{expected}'."
            )
    if payload.get("san") is not None:
        wanted = {_normalise_san(s) for s in payload["san"]}
        present = _san_strings(csr)
        if present is None and wanted:
            raise _Reject("SubjectAltNameMissing", "The CSR has no subject alternative name.")
        if (present or set()) != wanted:
            raise _Reject(
                "SubjectAltNameMismatch",
                f"Subject alternative names {sorted(present or set())} do not match "
                f"{sorted(wanted)}.",
            )
    if payload.get("ks") is not None and _key_size(csr) != payload["ks"]:
        raise _Reject(
            "KeyLengthMismatch", f"Key length {_key_size(csr)} does not match {payload['ks']}."
        )
    if payload.get("eku") is not None:
        try:
            usages = csr.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            raise _Reject("EnhancedKeyUsageMissing", "The CSR has no EKU extension.") from None
        if {u.dotted_string for u in usages} != set(payload["eku"]):
            raise _Reject("EnhancedKeyUsageMismatch", "Enhanced key usages do not match.")


def _check_challenge(
    state: SimulatorState, payload: dict[str, Any], token_tenant: str
) -> ChallengeRecord:
    if payload["tid"] != token_tenant:
        raise _Reject(
            "BadTenantIdInChallenge",
            f"Tenant id in challenge {payload['tid']} does not match the caller's tenant.",
        )
    now = state.clock.now()
    created = dt.datetime.fromtimestamp(payload["iat"], dt.UTC)
    expires = dt.datetime.fromtimestamp(payload["exp"], dt.UTC)
    if now > expires:
        interval = round((expires - created).total_seconds() / 60)
        raise _Reject(
            "ChallengeExpired",
            f"SCEP challenge has expired, currentTime={now.isoformat()}, "
            f"challengeExpInterval={interval}, challengeExpiration={expires.isoformat()}, "
            f"challengeCreation={created.isoformat()}",
        )
    if created > now + _SKEW:
        raise _Reject("ChallengeInvalidTimestamp", "Challenge was created in the future.")
    record = state.challenges.setdefault(payload["id"], ChallengeRecord())
    if record.untargeted:
        raise _Reject(
            "ScepProfileNoLongerTargetedToTheClient",
            "The SCEP profile is no longer targeted to the device.",
        )
    if record.uses and state.knobs.replay == "reject":
        raise _Reject(state.knobs.replay_code, "The challenge has already been used.")
    return record


def evaluate(state: SimulatorState, certificate_request: str, token_tenant: str) -> Verdict:
    """What Intune's validateRequest answers for this CSR from this tenant."""
    payload: dict[str, Any] | None = None
    try:
        csr = _load_csr(certificate_request)
        try:
            attribute = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD)
        except x509.AttributeNotFound:
            raise _Reject("ChallengePasswordMissing", "Challenge password missing.") from None
        raw = attribute.value
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        payload = _decode_challenge(state, text)
        with state.lock:
            record = _check_challenge(state, payload, token_tenant)
            _check_csr(csr, payload)
            if payload.get("fc"):
                raise _Reject(payload["fc"], "Forced by the simulator's challenge.")
            record.uses += 1
    except _Reject as rejected:
        challenge_id = payload["id"] if payload else None
        return Verdict(rejected.code, rejected.description, challenge_id)
    return Verdict("Success", "", payload["id"])

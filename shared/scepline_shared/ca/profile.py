"""Certificate profiles: what a CSR may ask for and what the issued cert carries."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, TypeAlias, get_args

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from scepline_shared.ca._common import key_usage
from scepline_shared.ca.errors import PolicyViolation

__all__ = [
    "DEFAULT_KEY_USAGE",
    "UPN_OID",
    "CertificateProfile",
    "KeyTypeName",
    "SanType",
    "key_type_name",
    "san_type",
]

#: Microsoft UPN otherName (szOID_NT_PRINCIPAL_NAME), used by Intune user certs.
UPN_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")

SanType: TypeAlias = Literal[
    "dns", "email", "uri", "ip", "upn", "other_name", "directory_name", "registered_id"
]
KeyTypeName: TypeAlias = Literal["rsa", "P-256", "P-384", "P-521"]

_SAN_TYPES: frozenset[str] = frozenset(get_args(SanType))
_KEY_TYPES: frozenset[str] = frozenset(get_args(KeyTypeName))
_CURVE_NAMES: dict[str, KeyTypeName] = {
    "secp256r1": "P-256",
    "secp384r1": "P-384",
    "secp521r1": "P-521",
}

DEFAULT_KEY_USAGE = key_usage(digital_signature=True, key_encipherment=True)
# URIs are on by default because Intune's strong-mapping SAN is a URI
# (tag:microsoft.com,2022-09-14:sid:<SID>), needed for KB5014754 enforcement.
_DEFAULT_SANS: frozenset[SanType] = frozenset({"dns", "email", "uri", "ip", "upn"})
_DEFAULT_KEYS: frozenset[KeyTypeName] = frozenset({"rsa", "P-256", "P-384"})


def san_type(name: x509.GeneralName) -> SanType:
    """Classify a GeneralName into the profile's SAN vocabulary."""
    if isinstance(name, x509.DNSName):
        return "dns"
    if isinstance(name, x509.RFC822Name):
        return "email"
    if isinstance(name, x509.UniformResourceIdentifier):
        return "uri"
    if isinstance(name, x509.IPAddress):
        return "ip"
    if isinstance(name, x509.OtherName):
        return "upn" if name.type_id == UPN_OID else "other_name"
    if isinstance(name, x509.DirectoryName):
        return "directory_name"
    if isinstance(name, x509.RegisteredID):
        return "registered_id"
    raise TypeError(f"unknown GeneralName {type(name).__name__}")  # pragma: no cover


def key_type_name(public_key: CertificatePublicKeyTypes) -> str:
    """``"rsa"``, ``"P-256"``... or a descriptive name for anything else."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return "rsa"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return _CURVE_NAMES.get(public_key.curve.name, f"ec:{public_key.curve.name}")
    # Ed25519PublicKey -> "Ed25519": readable in failInfoText and logs.
    return type(public_key).__name__.removesuffix("PublicKey")


@dataclass(frozen=True, slots=True)
class CertificateProfile:
    """Issuance policy for one kind of certificate.

    SANs: names of a type outside ``allowed_san_types`` are dropped when
    ``on_disallowed_san="drop"`` (default: a device keeps enrolling with what the
    profile permits, and Intune's own validation already bound the request to the
    admin's profile) or make the CSR fail with :class:`PolicyViolation` when
    ``"refuse"``. Either way a CSR left with an empty subject and no SAN is refused.
    """

    validity_days: int = 365
    # Absorbs device clock skew; a cert "not yet valid" on a slow clock breaks Wi-Fi/VPN.
    backdate_seconds: int = 300
    key_usage: x509.KeyUsage = DEFAULT_KEY_USAGE
    extended_key_usage: tuple[ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH,)
    copy_subject: bool = True
    allowed_san_types: frozenset[SanType] = _DEFAULT_SANS
    on_disallowed_san: Literal["drop", "refuse"] = "drop"
    allowed_key_types: frozenset[KeyTypeName] = _DEFAULT_KEYS
    min_rsa_bits: int = 2048
    # Caps CSR verification cost; 16384-bit keys are a cheap DoS on the validator.
    max_rsa_bits: int = 8192

    def __post_init__(self) -> None:
        if not isinstance(self.key_usage, x509.KeyUsage):
            raise TypeError("key_usage must be an x509.KeyUsage")
        if self.validity_days <= 0:
            raise ValueError(f"validity_days must be > 0, got {self.validity_days}")
        if self.backdate_seconds < 0:
            raise ValueError(f"backdate_seconds must be >= 0, got {self.backdate_seconds}")
        if not 2048 <= self.min_rsa_bits <= self.max_rsa_bits:
            raise ValueError(
                f"need 2048 <= min_rsa_bits ({self.min_rsa_bits}) <= "
                f"max_rsa_bits ({self.max_rsa_bits})"
            )
        if self.on_disallowed_san not in ("drop", "refuse"):
            raise ValueError("on_disallowed_san must be 'drop' or 'refuse'")
        # Accept any iterable from config, store frozensets so the profile stays hashable.
        object.__setattr__(self, "allowed_san_types", _frozen(self.allowed_san_types))
        object.__setattr__(self, "allowed_key_types", _frozen(self.allowed_key_types))
        object.__setattr__(self, "extended_key_usage", tuple(self.extended_key_usage))
        if unknown := self.allowed_san_types - _SAN_TYPES:
            raise ValueError(f"unknown SAN types {sorted(unknown)}; known: {sorted(_SAN_TYPES)}")
        if bad_keys := self.allowed_key_types - _KEY_TYPES:
            raise ValueError(f"unknown key types {sorted(bad_keys)}; known: {sorted(_KEY_TYPES)}")
        if not all(isinstance(oid, ObjectIdentifier) for oid in self.extended_key_usage):
            raise TypeError("extended_key_usage must contain ObjectIdentifier values")

    def check_public_key(self, public_key: CertificatePublicKeyTypes) -> None:
        """Raise :class:`PolicyViolation` unless the requester key is allowed."""
        name = key_type_name(public_key)
        if name not in self.allowed_key_types:
            allowed = ", ".join(sorted(self.allowed_key_types))
            raise PolicyViolation(f"key type {name} not allowed (allowed: {allowed})")
        if isinstance(public_key, rsa.RSAPublicKey):
            bits = public_key.key_size
            if not self.min_rsa_bits <= bits <= self.max_rsa_bits:
                raise PolicyViolation(
                    f"RSA key size {bits} outside {self.min_rsa_bits}..{self.max_rsa_bits}"
                )

    def filter_sans(self, names: Iterable[x509.GeneralName]) -> list[x509.GeneralName]:
        """The requested names this profile lets through, in request order."""
        kept: list[x509.GeneralName] = []
        for name in names:
            kind = san_type(name)
            if kind in self.allowed_san_types:
                kept.append(name)
            elif self.on_disallowed_san == "refuse":
                raise PolicyViolation(f"SAN type {kind} not allowed by the profile")
        return kept


def _frozen(values: Iterable[str]) -> frozenset[str]:
    if isinstance(values, str):
        raise TypeError("expected a collection of names, not a single string")
    return frozenset(values)

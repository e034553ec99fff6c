"""Certificate profiles: what a CSR may ask for and what the issued cert carries."""

from __future__ import annotations

import re
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
    "EKU_NAMES",
    "KEY_USAGE_NAMES",
    "UPN_OID",
    "CertificateProfile",
    "KeyTypeName",
    "ProfileNameError",
    "SanType",
    "key_type_name",
    "parse_extended_key_usage",
    "parse_key_types",
    "parse_key_usage",
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


#: KeyUsage bits by cryptography's field name (RFC 5280 4.2.1.3 order).
KEY_USAGE_NAMES: tuple[str, ...] = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)
# RFC 5280 spellings and the pre-X.509v3 name people still write.
_KEY_USAGE_ALIASES: dict[str, str] = {
    "non_repudiation": "content_commitment",
    "c_rlsign": "crl_sign",  # cRLSign after _normalised
}
# A leaf with keyCertSign/cRLSign claims CA powers that BasicConstraints cA=FALSE denies
# (RFC 5280 4.2.1.3); refusing the name at start-up beats a certificate verifiers reject.
_CA_ONLY_USAGES = frozenset({"key_cert_sign", "crl_sign"})

#: Extended key usage names accepted in configuration (dotted OIDs are accepted too).
EKU_NAMES: dict[str, ObjectIdentifier] = {
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "email_protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "code_signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "time_stamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocsp_signing": ExtendedKeyUsageOID.OCSP_SIGNING,
    # Windows smart-card logon (szOID_KP_SMARTCARD_LOGON) for Intune-issued user certs.
    "smartcard_logon": ObjectIdentifier("1.3.6.1.4.1.311.20.2.2"),
    "ipsec_ike": ObjectIdentifier("1.3.6.1.5.5.7.3.17"),
    "kerberos_pkinit_kdc": ObjectIdentifier("1.3.6.1.5.2.3.5"),
    "kerberos_pkinit_client": ObjectIdentifier("1.3.6.1.5.2.3.4"),
    "any": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
}
_DOTTED_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")

_KEY_TYPE_ALIASES: dict[str, KeyTypeName] = {
    "rsa": "rsa",
    "p-256": "P-256",
    "p256": "P-256",
    "secp256r1": "P-256",
    "prime256v1": "P-256",
    "p-384": "P-384",
    "p384": "P-384",
    "secp384r1": "P-384",
    "p-521": "P-521",
    "p521": "P-521",
    "secp521r1": "P-521",
}


class ProfileNameError(ValueError):
    """A profile setting names something unknown; ``field`` says which setting.

    ``field`` is the :meth:`CertificateProfile.from_names` argument, so a caller
    reading configuration can name its own setting (e.g. SCEPLINE_CERT_KEY_USAGE).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


def _normalised(name: str) -> str:
    """``digitalSignature``, ``Digital-Signature`` and ``digital_signature`` are one name."""
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name.strip())
    return snake.replace("-", "_").replace(" ", "_").lower()


def parse_key_usage(names: Iterable[str]) -> x509.KeyUsage:
    """A leaf KeyUsage from bit names (cryptography's field names or RFC 5280's)."""
    bits: set[str] = set()
    for raw in _names(names, "key_usage"):
        name = _KEY_USAGE_ALIASES.get(_normalised(raw), _normalised(raw))
        if name not in KEY_USAGE_NAMES:
            raise ProfileNameError(
                "key_usage", f"unknown key usage {raw!r}; known: {', '.join(KEY_USAGE_NAMES)}"
            )
        if name in _CA_ONLY_USAGES:
            raise ProfileNameError(
                "key_usage", f"{raw!r} is for CA certificates, not end-entity certificates"
            )
        bits.add(name)
    if not bits:
        raise ProfileNameError("key_usage", "at least one key usage is needed (RFC 5280 4.2.1.3)")
    if bits & {"encipher_only", "decipher_only"} and "key_agreement" not in bits:
        raise ProfileNameError("key_usage", "encipher_only/decipher_only need key_agreement")
    return x509.KeyUsage(**{name: name in bits for name in KEY_USAGE_NAMES})


def parse_extended_key_usage(names: Iterable[str]) -> tuple[ObjectIdentifier, ...]:
    """EKU OIDs from names (see :data:`EKU_NAMES`) or dotted OIDs, duplicates dropped.

    An empty list is allowed: the certificate then carries no EKU extension.
    """
    oids: list[ObjectIdentifier] = []
    for raw in _names(names, "extended_key_usage"):
        text = raw.strip()
        if _DOTTED_OID.fullmatch(text):
            oid = ObjectIdentifier(text)
        else:
            found = EKU_NAMES.get(_normalised(text))
            if found is None:
                raise ProfileNameError(
                    "extended_key_usage",
                    f"unknown extended key usage {raw!r}; use a dotted OID or one of: "
                    f"{', '.join(EKU_NAMES)}",
                )
            oid = found
        if oid not in oids:
            oids.append(oid)
    return tuple(oids)


def parse_key_types(names: Iterable[str]) -> frozenset[KeyTypeName]:
    """Requester key types: ``rsa``, ``P-256``, ``P-384``, ``P-521`` (case and alias tolerant)."""
    found: set[KeyTypeName] = set()
    for raw in _names(names, "key_types"):
        kind = _KEY_TYPE_ALIASES.get(raw.strip().lower())
        if kind is None:
            raise ProfileNameError(
                "key_types", f"unknown key type {raw!r}; known: {', '.join(sorted(_KEY_TYPES))}"
            )
        found.add(kind)
    if not found:
        raise ProfileNameError("key_types", "at least one requester key type is needed")
    return frozenset(found)


def _parse_san_types(names: Iterable[str]) -> frozenset[SanType]:
    found: set[str] = set()
    for raw in _names(names, "san_types"):
        kind = _normalised(raw)
        if kind not in _SAN_TYPES:
            raise ProfileNameError(
                "san_types", f"unknown SAN type {raw!r}; known: {', '.join(sorted(_SAN_TYPES))}"
            )
        found.add(kind)
    return frozenset(found)  # type: ignore[arg-type]  # checked against SanType above


def _names(names: Iterable[str], field: str) -> list[str]:
    # A bare string would iterate as characters: "client_auth" -> "c", "l", ...
    if isinstance(names, str):
        raise ProfileNameError(field, "expected a list of names, not a single string")
    return [name for name in names if name.strip()]


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

    @classmethod
    def from_names(
        cls,
        *,
        validity_days: int = 365,
        key_usage: Iterable[str] = ("digital_signature", "key_encipherment"),
        extended_key_usage: Iterable[str] = ("client_auth",),
        san_types: Iterable[str] = tuple(sorted(_DEFAULT_SANS)),
        on_disallowed_san: str = "drop",
        copy_subject: bool = True,
        key_types: Iterable[str] = tuple(sorted(_DEFAULT_KEYS)),
        min_rsa_bits: int = 2048,
        max_rsa_bits: int = 8192,
    ) -> CertificateProfile:
        """A profile from configuration-style names; :class:`ProfileNameError` names
        the offending argument (``field``) for anything unknown or out of range."""
        if validity_days <= 0:
            raise ProfileNameError("validity_days", f"must be > 0, got {validity_days}")
        if on_disallowed_san not in ("drop", "refuse"):
            raise ProfileNameError(
                "on_disallowed_san", f"must be 'drop' or 'refuse', got {on_disallowed_san!r}"
            )
        if min_rsa_bits < 2048:
            raise ProfileNameError("min_rsa_bits", f"must be >= 2048, got {min_rsa_bits}")
        if max_rsa_bits < min_rsa_bits:
            raise ProfileNameError(
                "max_rsa_bits", f"{max_rsa_bits} is below min_rsa_bits {min_rsa_bits}"
            )
        return cls(
            validity_days=validity_days,
            key_usage=parse_key_usage(key_usage),
            extended_key_usage=parse_extended_key_usage(extended_key_usage),
            copy_subject=copy_subject,
            allowed_san_types=_parse_san_types(san_types),
            on_disallowed_san=on_disallowed_san,  # type: ignore[arg-type]  # checked above
            allowed_key_types=parse_key_types(key_types),
            min_rsa_bits=min_rsa_bits,
            max_rsa_bits=max_rsa_bits,
        )

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

"""Certificate profiles: what a CSR may ask for and what the issued cert carries."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias, TypeVar, get_args

from asn1crypto import core as asn1_core
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from scepline_shared.ca._common import key_usage
from scepline_shared.ca.errors import PolicyViolation

__all__ = [
    "DEFAULT_KEY_USAGE",
    "EKU_NAMES",
    "INTUNE_SID_URI_PREFIX",
    "KEY_USAGE_NAMES",
    "SUBJECT_ATTRIBUTES",
    "UPN_OID",
    "CertificateProfile",
    "KeyTypeName",
    "ProfileNameError",
    "SanType",
    "VouchedSan",
    "eku_name",
    "key_type_name",
    "parse_extended_key_usage",
    "parse_key_types",
    "parse_key_usage",
    "parse_san_patterns",
    "parse_subject_attributes",
    "parse_subject_patterns",
    "requested_extended_key_usage",
    "requested_sans",
    "san_type",
    "subject_attribute",
    "vouched_san_kind",
]

#: Microsoft UPN otherName (szOID_NT_PRINCIPAL_NAME), used by Intune user certs.
UPN_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
#: Intune's strong-mapping SAN (KB5014754): ``tag:microsoft.com,2022-09-14:sid:<SID>``.
INTUNE_SID_URI_PREFIX = "tag:microsoft.com,2022-09-14:sid:"

# SAN kinds that name an account to Windows (logon, strong certificate mapping):
# only a provider that checked who the device is may put them in a certificate.
VouchedSan: TypeAlias = Literal["upn", "sid"]
_VOUCHED_SANS: frozenset[str] = frozenset(get_args(VouchedSan))

SanType: TypeAlias = Literal[
    "dns", "email", "uri", "ip", "upn", "other_name", "directory_name", "registered_id"
]
KeyTypeName: TypeAlias = Literal["rsa", "P-256", "P-384", "P-521"]

_T = TypeVar("_T")

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
# Other spellings people write (RFC 5280's id-kp-* names are read without the prefix).
_EKU_ALIASES: dict[str, str] = {
    "ocspsigning": "ocsp_signing",
    "ocsp_signing": "ocsp_signing",
    "ms_smartcard_login": "smartcard_logon",
    "smartcard_login": "smartcard_logon",
    "any_extended_key_usage": "any",
    "ipsec_ike_intermediate": "ipsec_ike",
}
_DOTTED_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")

#: Subject attributes a profile's subject rules may name (short or long names).
SUBJECT_ATTRIBUTES: dict[str, ObjectIdentifier] = {
    "cn": NameOID.COMMON_NAME,
    "c": NameOID.COUNTRY_NAME,
    "st": NameOID.STATE_OR_PROVINCE_NAME,
    "l": NameOID.LOCALITY_NAME,
    "o": NameOID.ORGANIZATION_NAME,
    "ou": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "street": NameOID.STREET_ADDRESS,
    "dc": NameOID.DOMAIN_COMPONENT,
    "uid": NameOID.USER_ID,
    "email": NameOID.EMAIL_ADDRESS,
    "serial_number": NameOID.SERIAL_NUMBER,
    "title": NameOID.TITLE,
    "given_name": NameOID.GIVEN_NAME,
    "surname": NameOID.SURNAME,
}
_SUBJECT_ALIASES: dict[str, str] = {
    "common_name": "cn",
    "country": "c",
    "country_name": "c",
    "state_or_province_name": "st",
    "locality": "l",
    "locality_name": "l",
    "organization": "o",
    "organization_name": "o",
    "organizational_unit": "ou",
    "organizational_unit_name": "ou",
    "street_address": "street",
    "domain_component": "dc",
    "user_id": "uid",
    "email_address": "email",
    "serialnumber": "serial_number",
    "gn": "given_name",
    "sn": "surname",
}

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
            found = EKU_NAMES.get(eku_name(text))
            if found is None:
                raise ProfileNameError(
                    "extended_key_usage",
                    f"unknown extended key usage {raw!r}; use a dotted OID or one of: "
                    f"{', '.join(EKU_NAMES)} (or in camelCase: clientAuth...)",
                )
            oid = found
        if oid not in oids:
            oids.append(oid)
    return tuple(oids)


def eku_name(text: str) -> str:
    """The :data:`EKU_NAMES` key ``text`` spells: ``clientAuth``, ``client-auth``,
    ``id-kp-clientAuth`` and ``client_auth`` are one name."""
    name = _normalised(text).removeprefix("id_kp_")
    return _EKU_ALIASES.get(name, name)


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


def _parse_san_types(names: Iterable[str], field: str = "san_types") -> frozenset[SanType]:
    found: set[str] = set()
    for raw in _names(names, field):
        found.add(_san_type_name(raw, field))
    return frozenset(found)  # type: ignore[arg-type]  # checked against SanType above


def _san_type_name(raw: str, field: str) -> SanType:
    kind = _normalised(raw)
    if kind not in _SAN_TYPES:
        raise ProfileNameError(
            field, f"unknown SAN type {raw!r}; known: {', '.join(sorted(_SAN_TYPES))}"
        )
    return kind  # type: ignore[return-value]  # checked against SanType above


def _pattern(raw: str, field: str, key: str) -> str:
    try:
        re.compile(raw)
    except re.error as error:
        raise ProfileNameError(field, f"{key}: not a regular expression ({error})") from None
    return raw


def parse_san_patterns(patterns: Mapping[str, str]) -> tuple[tuple[SanType, str], ...]:
    """``{"dns": r".*\\.example\\.com"}``: every SAN of that type must match its
    pattern in full. Keys are SAN types; values regular expressions."""
    return tuple(
        (_san_type_name(kind, "san_patterns"), _pattern(pattern, "san_patterns", kind))
        for kind, pattern in patterns.items()
    )


def subject_attribute(raw: str, field: str = "subject_patterns") -> str:
    """The :data:`SUBJECT_ATTRIBUTES` key ``raw`` names (``CN``, ``commonName``, ``cn``)."""
    name = _normalised(raw)
    name = _SUBJECT_ALIASES.get(name, name)
    if name not in SUBJECT_ATTRIBUTES:
        raise ProfileNameError(
            field, f"unknown subject attribute {raw!r}; known: {', '.join(SUBJECT_ATTRIBUTES)}"
        )
    return name


def parse_subject_patterns(patterns: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """``{"cn": "[a-z0-9-]+"}``: every subject attribute of that type must match
    its pattern in full."""
    return tuple(
        (subject_attribute(name), _pattern(pattern, "subject_patterns", name))
        for name, pattern in patterns.items()
    )


def parse_subject_attributes(
    names: Iterable[str], field: str = "required_subject_attributes"
) -> frozenset[str]:
    return frozenset(subject_attribute(raw, field) for raw in _names(names, field))


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


def vouched_san_kind(name: x509.GeneralName) -> VouchedSan | None:
    """``"upn"`` or ``"sid"`` for a SAN that names a Windows account, else None."""
    if isinstance(name, x509.OtherName) and name.type_id == UPN_OID:
        return "upn"
    if isinstance(name, x509.UniformResourceIdentifier) and name.value.lower().startswith(
        INTUNE_SID_URI_PREFIX
    ):
        return "sid"
    return None


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
    # Names a shared secret cannot vouch for. Each is off unless the profile
    # says otherwise: a static challenge proves membership, not identity.
    allow_wildcard_dns: bool = False
    allow_control_characters: bool = False
    # A leaf named like its CA confuses chain building (issuer = subject lookups).
    allow_ca_subject: bool = False
    # Issued only when the challenge provider vouched for the request's names
    # (Intune) or a renewal keeps them from a certificate that had them.
    vouched_san_types: frozenset[VouchedSan] = _VOUCHED_SANS  # type: ignore[assignment]
    # EKUs a CSR may ask for (Intune profiles put theirs in the CSR): when set,
    # a CSR's requested EKUs are issued if every one is in this set (refused
    # otherwise); a CSR that asks for none gets ``extended_key_usage``.
    csr_extended_key_usage: tuple[ObjectIdentifier, ...] = ()
    # Names the certificate must carry: at least one SAN of each type, and
    # these subject attributes (SUBJECT_ATTRIBUTES' short names).
    required_san_types: frozenset[SanType] = frozenset()
    required_subject_attributes: frozenset[str] = frozenset()
    # (SAN type, regular expression): every SAN of the type must match in full.
    san_patterns: tuple[tuple[SanType, str], ...] = ()
    # (subject attribute, regular expression): every such attribute must match in full.
    subject_patterns: tuple[tuple[str, str], ...] = ()

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
        object.__setattr__(self, "vouched_san_types", _frozen(self.vouched_san_types))
        if unknown_vouched := self.vouched_san_types - _VOUCHED_SANS:
            raise ValueError(
                f"unknown vouched SAN types {sorted(unknown_vouched)}; known: upn, sid"
            )
        object.__setattr__(self, "extended_key_usage", tuple(self.extended_key_usage))
        if unknown := self.allowed_san_types - _SAN_TYPES:
            raise ValueError(f"unknown SAN types {sorted(unknown)}; known: {sorted(_SAN_TYPES)}")
        if bad_keys := self.allowed_key_types - _KEY_TYPES:
            raise ValueError(f"unknown key types {sorted(bad_keys)}; known: {sorted(_KEY_TYPES)}")
        if not all(isinstance(oid, ObjectIdentifier) for oid in self.extended_key_usage):
            raise TypeError("extended_key_usage must contain ObjectIdentifier values")
        object.__setattr__(self, "csr_extended_key_usage", tuple(self.csr_extended_key_usage))
        if not all(isinstance(oid, ObjectIdentifier) for oid in self.csr_extended_key_usage):
            raise TypeError("csr_extended_key_usage must contain ObjectIdentifier values")
        object.__setattr__(self, "required_san_types", _frozen(self.required_san_types))
        if unknown_required := self.required_san_types - _SAN_TYPES:
            raise ValueError(f"unknown required SAN types {sorted(unknown_required)}")
        if missing := self.required_san_types - self.allowed_san_types:
            raise ValueError(
                f"required SAN types {sorted(missing)} are not among the allowed san_types"
            )
        object.__setattr__(
            self, "required_subject_attributes", _frozen(self.required_subject_attributes)
        )
        if unknown_attributes := self.required_subject_attributes - set(SUBJECT_ATTRIBUTES):
            raise ValueError(f"unknown subject attributes {sorted(unknown_attributes)}")
        object.__setattr__(self, "san_patterns", tuple(tuple(p) for p in self.san_patterns))
        object.__setattr__(self, "subject_patterns", tuple(tuple(p) for p in self.subject_patterns))
        for kind, pattern in self.san_patterns:
            if kind not in _SAN_TYPES:
                raise ValueError(f"san_patterns: unknown SAN type {kind!r}")
            re.compile(pattern)
        for attribute, pattern in self.subject_patterns:
            if attribute not in SUBJECT_ATTRIBUTES:
                raise ValueError(f"subject_patterns: unknown subject attribute {attribute!r}")
            re.compile(pattern)

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
        allow_wildcard_dns: bool = False,
        allow_control_characters: bool = False,
        allow_ca_subject: bool = False,
        vouched_san_types: Iterable[str] = tuple(sorted(_VOUCHED_SANS)),
        csr_extended_key_usage: Iterable[str] = (),
        required_san_types: Iterable[str] = (),
        required_subject_attributes: Iterable[str] = (),
        san_patterns: Mapping[str, str] | None = None,
        subject_patterns: Mapping[str, str] | None = None,
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
            allow_wildcard_dns=allow_wildcard_dns,
            allow_control_characters=allow_control_characters,
            allow_ca_subject=allow_ca_subject,
            vouched_san_types=_parse_vouched_sans(vouched_san_types),
            csr_extended_key_usage=_field(
                "csr_extended_key_usage", parse_extended_key_usage, csr_extended_key_usage
            ),
            required_san_types=_required_sans(required_san_types, san_types),
            required_subject_attributes=parse_subject_attributes(required_subject_attributes),
            san_patterns=parse_san_patterns(san_patterns or {}),
            subject_patterns=parse_subject_patterns(subject_patterns or {}),
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

    def issued_subject(self, csr: x509.CertificateSigningRequest) -> x509.Name:
        """The subject a certificate for ``csr`` carries."""
        return csr.subject if self.copy_subject else x509.Name([])

    def check_names(
        self,
        subject: x509.Name,
        sans: Iterable[x509.GeneralName],
        *,
        ca_subject: x509.Name,
        names_vouched: bool,
    ) -> None:
        """Raise :class:`PolicyViolation` for names this profile will not put in a
        certificate: control characters, the CA's own subject, wildcard DNS
        names, and account SANs (UPN, Intune SID) nobody vouched for."""
        sans = list(sans)
        if not self.allow_control_characters:
            for attribute in subject:
                if isinstance(attribute.value, str) and _has_control(attribute.value):
                    raise PolicyViolation(
                        f"subject {attribute.oid._name} contains control characters"
                    )
            for name in sans:
                if _has_control(_san_text(name)):
                    raise PolicyViolation(f"{san_type(name)} SAN contains control characters")
        if not self.allow_ca_subject and list(subject) and subject == ca_subject:
            raise PolicyViolation("the subject is the CA's own name")
        if not self.allow_wildcard_dns:
            wildcard = any(
                isinstance(name, x509.DNSName) and "*" in name.value for name in sans
            ) or any(
                "*" in str(attribute.value)
                for attribute in subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            )
            if wildcard:
                raise PolicyViolation("wildcard names are not allowed by the profile")
        if not names_vouched:
            for name in sans:
                kind = vouched_san_kind(name)
                if kind is not None and kind in self.vouched_san_types:
                    raise PolicyViolation(
                        f"a {kind.upper()} SAN names a Windows account: only a challenge "
                        "provider that checks identities (Intune) may ask for it"
                    )

    def issued_extended_key_usage(
        self, csr: x509.CertificateSigningRequest
    ) -> tuple[ObjectIdentifier, ...]:
        """The EKUs a certificate for ``csr`` carries: those the CSR asks for when
        the profile takes them from the CSR (each within ``csr_extended_key_usage``,
        else :class:`PolicyViolation`), otherwise the profile's fixed ones."""
        if not self.csr_extended_key_usage:
            return self.extended_key_usage
        requested = requested_extended_key_usage(csr)
        if not requested:
            return self.extended_key_usage
        for oid in requested:
            if oid not in self.csr_extended_key_usage:
                allowed = ", ".join(_eku_text(o) for o in self.csr_extended_key_usage)
                raise PolicyViolation(
                    f"the CSR asks for extended key usage {_eku_text(oid)}, which the "
                    f"profile does not allow (allowed: {allowed})"
                )
        return tuple(dict.fromkeys(requested))

    def check_rules(self, subject: x509.Name, sans: Iterable[x509.GeneralName]) -> None:
        """Raise :class:`PolicyViolation` unless the names to be issued follow the
        profile's subject and SAN rules: required attributes and SAN types, and
        patterns every attribute or SAN of a type must match in full."""
        sans = list(sans)
        for attribute in sorted(self.required_subject_attributes):
            if not subject.get_attributes_for_oid(SUBJECT_ATTRIBUTES[attribute]):
                raise PolicyViolation(f"the subject needs a {attribute.upper()} attribute")
        for attribute, pattern in self.subject_patterns:
            for value in subject.get_attributes_for_oid(SUBJECT_ATTRIBUTES[attribute]):
                text = value.value if isinstance(value.value, str) else ""
                if re.fullmatch(pattern, text) is None:
                    raise PolicyViolation(
                        f"subject {attribute.upper()} {text!r} does not match the profile's "
                        f"pattern {pattern!r}"
                    )
        present = {san_type(name) for name in sans}
        for kind in sorted(self.required_san_types - present):
            raise PolicyViolation(f"the request needs a {kind} SAN")
        for kind, pattern in self.san_patterns:
            for name in sans:
                if san_type(name) == kind and re.fullmatch(pattern, _san_text(name)) is None:
                    raise PolicyViolation(
                        f"{kind} SAN {_san_text(name)!r} does not match the profile's "
                        f"pattern {pattern!r}"
                    )

    def renewal_changes(
        self, csr: x509.CertificateSigningRequest, renewed: x509.Certificate, *, exact_sans: bool
    ) -> str | None:
        """Why a certificate for ``csr`` would name someone else than ``renewed``
        does, or None when it keeps that identity: the same subject, and SANs
        that are the same (``exact_sans``) or a subset."""
        if self.issued_subject(csr) != renewed.subject:
            return (
                f"the subject {csr.subject.rfc4514_string()!r} differs from the renewed "
                f"certificate's {renewed.subject.rfc4514_string()!r}"
            )
        try:
            requested = self.filter_sans(requested_sans(csr))
        except PolicyViolation as refused:
            return refused.reason
        try:
            san = renewed.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            held = list(san.value)
        except x509.ExtensionNotFound:
            held = []
        added = [name for name in requested if name not in held]
        if added:
            return f"the renewed certificate does not name {_san_text(added[0])!r}"
        if exact_sans and len(set(requested)) != len(set(held)):
            return "the request drops names of the renewed certificate (exact SAN match required)"
        return None

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


def _field(field: str, parse: Callable[[Iterable[str]], _T], names: Iterable[str]) -> _T:
    """``parse(names)`` with its errors naming ``field`` instead."""
    try:
        return parse(names)
    except ProfileNameError as error:
        raise ProfileNameError(field, error.detail) from None


def _required_sans(names: Iterable[str], allowed: Iterable[str]) -> frozenset[SanType]:
    required = _parse_san_types(names, "required_san_types")
    allowed_types = _parse_san_types(allowed)
    if missing := required - allowed_types:
        raise ProfileNameError(
            "required_san_types",
            f"{', '.join(sorted(missing))} must be among san_types to be required",
        )
    return required


def _eku_text(oid: ObjectIdentifier) -> str:
    for name, known in EKU_NAMES.items():
        if known == oid:
            return name
    return oid.dotted_string


def requested_extended_key_usage(
    csr: x509.CertificateSigningRequest,
) -> tuple[ObjectIdentifier, ...]:
    """The ExtendedKeyUsage of ``csr``'s extensionRequest (empty without one)."""
    try:
        extensions = csr.extensions
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise PolicyViolation(f"CSR extensionRequest is malformed: {exc}") from exc
    try:
        return tuple(extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return ()


def _parse_vouched_sans(names: Iterable[str]) -> frozenset[VouchedSan]:
    found: set[str] = set()
    for raw in _names(names, "vouched_san_types"):
        kind = raw.strip().lower()
        if kind not in _VOUCHED_SANS:
            raise ProfileNameError(
                "vouched_san_types", f"unknown vouched SAN type {raw!r}; known: sid, upn"
            )
        found.add(kind)
    return frozenset(found)  # type: ignore[arg-type]  # checked against VouchedSan above


def _frozen(values: Iterable[str]) -> frozenset[str]:
    if isinstance(values, str):
        raise TypeError("expected a collection of names, not a single string")
    return frozenset(values)


def requested_sans(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    """The SubjectAlternativeName of ``csr``'s extensionRequest (empty without one)."""
    try:
        extensions = csr.extensions
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise PolicyViolation(f"CSR extensionRequest is malformed: {exc}") from exc
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san)


# C0 controls, DEL and C1 controls: never part of a name, often part of an attack
# (a NUL ends the name for C code that reads the certificate).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def _san_text(name: x509.GeneralName) -> str:
    """A SAN as text, for control-character checks and messages."""
    if isinstance(name, x509.OtherName):
        # An otherName holds DER of any type; a UPN's is a UTF8String.
        try:
            value = asn1_core.load(name.value).native
        except ValueError:
            return ""  # unreadable DER: the CSR parser already accepted it as opaque
        return value if isinstance(value, str) else ""
    if isinstance(name, x509.DirectoryName):
        return name.value.rfc4514_string()
    return str(name.value)

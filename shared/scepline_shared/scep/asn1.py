"""SCEP's ASN.1 additions to asn1crypto.

This is the only module that touches asn1crypto's OID tables. It registers the
SCEP authenticated attributes (RFC 8894 §3.2.1) and failInfoText (RFC 8894
§3.2.1.4.6) once at import, so ``cms.CMSAttribute`` parses their values into
typed objects instead of raw ``Any``. asn1crypto has no public registration
function: adding entries to ``CMSAttributeType._map`` and
``CMSAttribute._oid_specs`` is the way its maintainer gives for extending it
(other CMS libraries, pyHanko among them, do the same). The tables are still
underscored, so asn1crypto is pinned below its next minor release and
``tests/shared/test_library_internals.py`` fails if they change shape.

It also holds the helpers that keep asn1crypto 1.5.1 fast (see
``docs/specs/hsm-and-cms.md``, "asn1crypto's re-encoding cost"). A value built
from Python data stays "mutated" for ever in 1.5.1, so every parent that checks
or encodes it encodes the whole subtree again, and a parent that needs it with
other tagging deep-copies it.
A value *loaded* from bytes holds its encoding: a parent only concatenates it,
and re-tagging it copies one byte string. So the codec builds each level once
from loaded children and hands the parent ``frozen(level)``; values that never
change for a given certificate or algorithm are cached as DER. The output is
byte for byte what nested dicts give (``tests/shared/scep/test_build_equivalence``).
"""

from __future__ import annotations

import functools
from typing import TypeVar

from asn1crypto import cms, core, parser, x509

__all__ = [
    "FAIL_INFO",
    "FAIL_INFO_TEXT",
    "MESSAGE_TYPE",
    "PKI_STATUS",
    "RECIPIENT_NONCE",
    "SENDER_NONCE",
    "TRANSACTION_ID",
    "IssuerAndSubject",
    "attribute",
    "constant",
    "constant_attribute",
    "content_info",
    "frozen",
    "issuer_and_serial",
    "names_equal",
]

# (dotted OID, asn1crypto attribute name, value type)
_SCEP_ATTRIBUTES: tuple[tuple[str, str, type[core.Asn1Value]], ...] = (
    ("2.16.840.1.113733.1.9.2", "scep_message_type", core.PrintableString),
    ("2.16.840.1.113733.1.9.3", "scep_pki_status", core.PrintableString),
    ("2.16.840.1.113733.1.9.4", "scep_fail_info", core.PrintableString),
    ("2.16.840.1.113733.1.9.5", "scep_sender_nonce", core.OctetString),
    ("2.16.840.1.113733.1.9.6", "scep_recipient_nonce", core.OctetString),
    ("2.16.840.1.113733.1.9.7", "scep_transaction_id", core.PrintableString),
    ("1.3.6.1.5.5.7.24.1", "scep_fail_info_text", core.UTF8String),
)

MESSAGE_TYPE = "scep_message_type"
PKI_STATUS = "scep_pki_status"
FAIL_INFO = "scep_fail_info"
SENDER_NONCE = "scep_sender_nonce"
RECIPIENT_NONCE = "scep_recipient_nonce"
TRANSACTION_ID = "scep_transaction_id"
FAIL_INFO_TEXT = "scep_fail_info_text"


def _set_of(value_type: type[core.Asn1Value]) -> type[core.SetOf]:
    return type(f"SetOf{value_type.__name__}", (core.SetOf,), {"_child_spec": value_type})


def _register() -> None:
    reverse_map = cms.CMSAttributeType._reverse_map
    for oid, name, value_type in _SCEP_ATTRIBUTES:
        cms.CMSAttributeType._map[oid] = name
        cms.CMSAttribute._oid_specs[name] = _set_of(value_type)
        # asn1crypto builds the reverse map lazily, once per class: extend it
        # if a CMSAttributeType was already made before this module's import.
        if reverse_map is not None:
            reverse_map[name] = oid


class IssuerAndSubject(core.Sequence):
    """CertPoll (GetCertInitial) messageData, RFC 8894 §3.3.3."""

    _fields = [("issuer", x509.Name), ("subject", x509.Name)]


_register()

_Value = TypeVar("_Value", bound=core.Asn1Value)

# For asn1crypto's TLV encoder (parser.emit): tag classes, method, universal tags.
_UNIVERSAL, _CONTEXT = 0, 2
_CONSTRUCTED = 1
_SEQUENCE, _SET = 16, 17


def frozen(value: _Value) -> _Value:
    """``value`` re-loaded from its encoding, so parents never encode it again.

    Only for untagged values (a loaded value carries its class's own tag); a
    parent re-tags it by copying its encoding.
    """
    return value.load(value.dump())


def constant(value_type: type[_Value], **fields: str | int | bytes) -> _Value:
    """A structure that never changes (an AlgorithmIdentifier, ...), built once.

    ``constant(algos.DigestAlgorithm, algorithm="sha256")`` equals
    ``algos.DigestAlgorithm({"algorithm": "sha256"})``; its DER is cached.
    """
    return value_type.load(_constant_der(value_type, tuple(sorted(fields.items()))))


@functools.lru_cache(maxsize=64)
def _constant_der(
    value_type: type[core.Asn1Value], fields: tuple[tuple[str, str | int | bytes], ...]
) -> bytes:
    return value_type(dict(fields)).dump()


def attribute(name: str, value: core.Asn1Value) -> cms.CMSAttribute:
    """A frozen single-valued CMS attribute: ``SEQUENCE { type OID, SET { value } }``
    emitted around ``value.dump()`` and loaded back (building it as nested
    asn1crypto values encoded each level twice)."""
    values = parser.emit(_UNIVERSAL, _CONSTRUCTED, _SET, value.dump())
    return cms.CMSAttribute.load(
        parser.emit(_UNIVERSAL, _CONSTRUCTED, _SEQUENCE, _attribute_type_der(name) + values)
    )


@functools.lru_cache(maxsize=32)
def _attribute_type_der(name: str) -> bytes:
    return cms.CMSAttributeType(name).dump()


def constant_attribute(name: str, value: core.Asn1Value) -> cms.CMSAttribute:
    """``attribute`` for a value that repeats (contentType, messageType, pkiStatus)."""
    return cms.CMSAttribute.load(_attribute_der(name, type(value), value.dump()))


@functools.lru_cache(maxsize=64)
def _attribute_der(name: str, value_type: type[core.Asn1Value], value: bytes) -> bytes:
    return attribute(name, value_type.load(value)).dump()


def content_info(content_type: str, content: core.Sequence) -> bytes:
    """ContentInfo DER around a SignedData or EnvelopedData built from frozen parts.

    ``SEQUENCE { contentType OID, [0] EXPLICIT content }``, emitted with
    asn1crypto's own TLV encoder around ``content.dump()``. Going through
    ``cms.ContentInfo({...})`` instead made asn1crypto copy ``content`` to tag
    it, which re-parsed and re-encoded the whole tree: a third of a CertRep's
    build time.
    """
    explicit = parser.emit(_CONTEXT, _CONSTRUCTED, 0, content.dump())
    return parser.emit(
        _UNIVERSAL, _CONSTRUCTED, _SEQUENCE, _content_type_der(content_type) + explicit
    )


@functools.lru_cache(maxsize=8)
def _content_type_der(content_type: str) -> bytes:
    return cms.ContentType(content_type).dump()


def issuer_and_serial(issuer: bytes, serial_number: int) -> cms.IssuerAndSerialNumber:
    """IssuerAndSerialNumber from the issuer Name's DER and a serial number.

    Its DER is cached: the RA certificate signs every CertRep, and a client
    certificate is addressed again on every poll.
    """
    return cms.IssuerAndSerialNumber.load(_issuer_and_serial_der(issuer, serial_number))


@functools.lru_cache(maxsize=256)
def _issuer_and_serial_der(issuer: bytes, serial_number: int) -> bytes:
    return cms.IssuerAndSerialNumber(
        {"issuer": x509.Name.load(issuer), "serial_number": serial_number}
    ).dump()


def names_equal(encoded: bytes, name: x509.Name) -> bool:
    """``x509.Name.load(encoded) == name``: RFC 5280 §7.1 matching, fast when equal.

    The full comparison string-preps every attribute value (RFC 4518) of both
    names, each time, which is slow. When ``name`` has exactly the bytes
    ``encoded``, the answer is that of comparing the name with itself: True, or
    the error that reading or preparing a value raises (the preparation refuses
    some code points). ``_equal_to_itself`` answers that without preparing
    plain ASCII values, which cannot fail, and caches it; an error is not
    cached, so it is raised again every time, like the full comparison's.
    """
    if name.dump() == encoded:
        return _equal_to_itself(encoded)
    return bool(x509.Name.load(encoded) == name)


@functools.lru_cache(maxsize=256)
def _equal_to_itself(encoded: bytes) -> bool:
    name = x509.Name.load(encoded)
    if _is_ascii_text(name):
        # RFC 4518 preparation of ASCII only maps and folds, never prohibits.
        return True
    # One parsed name compared with itself: asn1crypto keeps each value's
    # preparation, so every value is prepared once.
    return bool(name == name)


def _is_ascii_text(name: x509.Name) -> bool:
    """Every attribute value reads as ASCII text (False if one cannot be read)."""
    try:
        for rdn in name.chosen:
            for type_and_value in rdn:
                _ = type_and_value["type"].native  # the comparison reads it too
                value = type_and_value["value"].native
                if not (isinstance(value, str) and value.isascii()):
                    return False
    except Exception:  # noqa: BLE001 - the full comparison then raises it as before
        return False
    return True

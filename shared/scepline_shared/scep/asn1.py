"""SCEP's ASN.1 additions to asn1crypto.

This is the only module that touches asn1crypto's OID tables. It registers the
SCEP authenticated attributes (RFC 8894 §3.2.1) and failInfoText (RFC 8894
§3.2.1.4.6) once at import, so ``cms.CMSAttribute`` parses their values into
typed objects instead of raw ``Any``.
"""

from __future__ import annotations

from asn1crypto import cms, core, x509

__all__ = [
    "FAIL_INFO",
    "FAIL_INFO_TEXT",
    "MESSAGE_TYPE",
    "PKI_STATUS",
    "RECIPIENT_NONCE",
    "SENDER_NONCE",
    "TRANSACTION_ID",
    "IssuerAndSubject",
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
    for oid, name, value_type in _SCEP_ATTRIBUTES:
        cms.CMSAttributeType._map[oid] = name
        cms.CMSAttribute._oid_specs[name] = _set_of(value_type)
    # asn1crypto caches the reverse map lazily; reset it so the new names resolve.
    cms.CMSAttributeType._reverse_map = None


class IssuerAndSubject(core.Sequence):
    """CertPoll (GetCertInitial) messageData, RFC 8894 §3.3.3."""

    _fields = [("issuer", x509.Name), ("subject", x509.Name)]


_register()

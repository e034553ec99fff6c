"""RFC 5280 CRLReason: the one table of revocation reasons.

Each reason's code (stored with a revoked certificate, written into CRLs), the
name operators type (``scepline cert revoke --reason``) and cryptography's flag.
"""

from __future__ import annotations

from cryptography import x509

__all__ = [
    "CESSATION_OF_OPERATION",
    "REASON_CODES",
    "REASON_FLAGS",
    "REASON_LABELS",
    "REASON_NAMES",
    "SUPERSEDED",
    "UNSPECIFIED",
]

# (code, operator's name, flag). 7 is unassigned; 8 (removeFromCRL) belongs to
# delta CRLs and 10 (aACompromise) to attribute authorities: neither is a reason
# an operator of this CA revokes for, so they have no name to type.
_TABLE: tuple[tuple[int, str | None, x509.ReasonFlags], ...] = (
    (0, "unspecified", x509.ReasonFlags.unspecified),
    (1, "key-compromise", x509.ReasonFlags.key_compromise),
    (2, "ca-compromise", x509.ReasonFlags.ca_compromise),
    (3, "affiliation-changed", x509.ReasonFlags.affiliation_changed),
    (4, "superseded", x509.ReasonFlags.superseded),
    (5, "cessation-of-operation", x509.ReasonFlags.cessation_of_operation),
    (6, "certificate-hold", x509.ReasonFlags.certificate_hold),
    (8, None, x509.ReasonFlags.remove_from_crl),
    (9, "privilege-withdrawn", x509.ReasonFlags.privilege_withdrawn),
    (10, None, x509.ReasonFlags.aa_compromise),
)

#: Every RFC 5280 CRLReason code.
REASON_CODES: frozenset[int] = frozenset(code for code, _, _ in _TABLE)
#: Code -> the flag written into a CRL entry.
REASON_FLAGS: dict[int, x509.ReasonFlags] = {code: flag for code, _, flag in _TABLE}
#: The names operators type -> code.
REASON_NAMES: dict[str, int] = {name: code for code, name, _ in _TABLE if name is not None}
#: Code -> the name to show (the RFC's flag value for codes without one).
REASON_LABELS: dict[int, str] = {code: name or flag.value for code, name, flag in _TABLE}

# Nothing is known against it: a certificate signed but never released.
UNSPECIFIED = REASON_NAMES["unspecified"]
# A voided serial: its signing claim was given up and the request signed again
# under another serial (or ended); whatever the key may have produced for it is
# replaced, which is what RFC 5280 calls superseded.
SUPERSEDED = REASON_NAMES["superseded"]
# A device Intune retired or wiped: it left management; nothing says its key leaked.
CESSATION_OF_OPERATION = REASON_NAMES["cessation-of-operation"]

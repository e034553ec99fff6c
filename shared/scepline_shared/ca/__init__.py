"""The certificate authority: CA material, profiles, issuance and CRLs.

Everything here takes :class:`~scepline_shared.keys.KeyPair` (cryptography key
ABCs), so file-backed and HSM-backed CA keys are interchangeable.
"""

from scepline_shared.ca._common import key_usage
from scepline_shared.ca.crl import REASON_CODES, build_crl
from scepline_shared.ca.errors import (
    CaError,
    CaMaterialError,
    CaNotInitialised,
    PolicyViolation,
)
from scepline_shared.ca.issue import MAX_SERIAL, issue_certificate, new_serial, serial_hex
from scepline_shared.ca.keysource import KeySource, TokenKeyEntry
from scepline_shared.ca.lab import CERTIFICATE_REQUEST_AGENT, RA_KEY_BITS
from scepline_shared.ca.material import CaMaterial, CaPaths, load_certificate, save_certificate
from scepline_shared.ca.profile import (
    DEFAULT_KEY_USAGE,
    UPN_OID,
    CertificateProfile,
    KeyTypeName,
    SanType,
    key_type_name,
    san_type,
)
from scepline_shared.ca.rollover import RolloverRefused, stage_rollover
from scepline_shared.ca.schedule import (
    CaGeneration,
    CaSchedule,
    CaScheduleWatcher,
    ensure_lab_ca,
    init_ca,
    load_ca_material,
    load_ca_schedule,
)

__all__ = [
    "CERTIFICATE_REQUEST_AGENT",
    "DEFAULT_KEY_USAGE",
    "MAX_SERIAL",
    "RA_KEY_BITS",
    "REASON_CODES",
    "UPN_OID",
    "CaError",
    "CaGeneration",
    "CaMaterial",
    "CaMaterialError",
    "CaNotInitialised",
    "CaPaths",
    "CaSchedule",
    "CaScheduleWatcher",
    "CertificateProfile",
    "KeySource",
    "KeyTypeName",
    "PolicyViolation",
    "RolloverRefused",
    "SanType",
    "TokenKeyEntry",
    "build_crl",
    "ensure_lab_ca",
    "init_ca",
    "issue_certificate",
    "key_type_name",
    "key_usage",
    "load_ca_material",
    "load_ca_schedule",
    "load_certificate",
    "new_serial",
    "san_type",
    "save_certificate",
    "serial_hex",
    "stage_rollover",
]

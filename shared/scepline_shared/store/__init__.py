"""The durable state store: models, engines, migrations and the repository.

The store is the source of truth for every SCEP request; services reach it
only through `RequestRepository` (and `CertificateRepository`) and the
frozen views they return. CSRs are stored sealed with the store key
(`store_key.py`).
"""

from scepline_shared.store.certificates import REVOCATION_REASONS, CertificateRepository
from scepline_shared.store.database import (
    create_engine_for,
    normalise_database_url,
    session_factory,
)
from scepline_shared.store.errors import (
    CrlNumberCollision,
    IllegalTransition,
    SerialCollision,
    StoreError,
    StoreKeyError,
    UnreadableCsr,
    UnsupportedDatabaseUrl,
)
from scepline_shared.store.migrate import upgrade_to_head, upgrade_to_head_sync
from scepline_shared.store.models import (
    ALLOWED_NOTIFY_TRANSITIONS,
    ALLOWED_TRANSITIONS,
    NON_TERMINAL_STATES,
    TERMINAL_STATES,
    NotifyState,
    RequestState,
)
from scepline_shared.store.repository import (
    MESSAGE_TYPES,
    TRANSITION_FIELDS,
    RequestRepository,
    utc_now,
)
from scepline_shared.store.seal_legacy import seal_legacy_csrs
from scepline_shared.store.store_key import STORE_KEY_FILE, CsrSealer, load_store_key
from scepline_shared.store.views import (
    CertificateView,
    CrlView,
    EventView,
    IssuedCertificateRecord,
    RecordResult,
    RequestView,
    serial_hex,
    spki_key_id,
)

__all__ = [
    "ALLOWED_NOTIFY_TRANSITIONS",
    "ALLOWED_TRANSITIONS",
    "MESSAGE_TYPES",
    "NON_TERMINAL_STATES",
    "REVOCATION_REASONS",
    "STORE_KEY_FILE",
    "TERMINAL_STATES",
    "TRANSITION_FIELDS",
    "CertificateRepository",
    "CertificateView",
    "CrlNumberCollision",
    "CrlView",
    "CsrSealer",
    "EventView",
    "IllegalTransition",
    "IssuedCertificateRecord",
    "NotifyState",
    "RecordResult",
    "RequestRepository",
    "RequestState",
    "RequestView",
    "SerialCollision",
    "StoreError",
    "StoreKeyError",
    "UnreadableCsr",
    "UnsupportedDatabaseUrl",
    "create_engine_for",
    "load_store_key",
    "normalise_database_url",
    "seal_legacy_csrs",
    "serial_hex",
    "session_factory",
    "spki_key_id",
    "upgrade_to_head",
    "upgrade_to_head_sync",
    "utc_now",
]

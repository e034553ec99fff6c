"""The store key: CSRs are stored sealed with it (AES-256-GCM).

A CSR carries the device's challengePassword in the clear, and the Intune
provider must send Intune the CSR exactly as the device sent it (to
validateRequest and in both notifications), so the attribute cannot be
stripped: the whole CSR is stored encrypted, for every provider alike. The
repository seals on the way in and opens on the way out, so callers only ever
see the CSR as received.

A sealed value is `SEALED_PREFIX || nonce (12 bytes) || ciphertext and tag`,
with a fresh random nonce per value and the request's transaction id as
associated data: a sealed CSR copied into another request's row does not open.
CSRs stored before sealing existed are DER (they start with 0x30, never with
the prefix) and are read as they are until `seal_legacy.py` seals them.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from scepline_shared.private_files import read_or_create_secret, read_secret
from scepline_shared.store.errors import StoreKeyError, UnreadableCsr

__all__ = [
    "SEALED_PREFIX",
    "STORE_KEY_BYTES",
    "STORE_KEY_FILE",
    "CsrSealer",
    "is_sealed",
    "load_store_key",
]

# The key file's name under the data directory, unless configured elsewhere.
STORE_KEY_FILE = "store.key"
STORE_KEY_BYTES = 32  # AES-256
# Marks (and versions) a sealed value; a DER SEQUENCE starts with 0x30 instead.
SEALED_PREFIX = b"sealed:1:"
_NONCE_BYTES = 12


def is_sealed(stored: bytes) -> bool:
    return stored.startswith(SEALED_PREFIX)


class CsrSealer:
    """Seals and opens stored CSRs with one store key; the key never leaves it."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != STORE_KEY_BYTES:
            raise StoreKeyError(f"a store key is {STORE_KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    @classmethod
    def generate(cls) -> CsrSealer:
        """A sealer with a new random key (tests and benchmarks)."""
        return cls(os.urandom(STORE_KEY_BYTES))

    def __repr__(self) -> str:
        return "CsrSealer(key=<hidden>)"

    def seal(self, csr_der: bytes, transaction_id: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return SEALED_PREFIX + nonce + self._aead.encrypt(nonce, csr_der, _bound(transaction_id))

    def open(self, stored: bytes, transaction_id: str) -> bytes:
        """The CSR as received; a value stored before sealing existed comes back as it is.

        Raises UnreadableCsr if the value was sealed under another key, altered,
        or belongs to another transaction id.
        """
        if not is_sealed(stored):
            return stored
        nonce = stored[len(SEALED_PREFIX) : len(SEALED_PREFIX) + _NONCE_BYTES]
        sealed = stored[len(SEALED_PREFIX) + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, sealed, _bound(transaction_id))
        except (InvalidTag, ValueError):  # ValueError: too short to hold a nonce
            raise UnreadableCsr(transaction_id) from None


def _bound(transaction_id: str) -> bytes:
    """Associated data: the value opens only in its own request's row."""
    return SEALED_PREFIX + transaction_id.encode()


def load_store_key(path: Path, *, create: bool) -> CsrSealer:
    """The sealer for the key in `path` (32 raw bytes).

    With `create` a missing file gets a new random key (mode 0600), created so
    that processes starting together on one data directory all end up with the
    same key. Without it (a key file the operator provides) a missing file is an
    error. StoreKeyError says what is wrong with the file, never its content.
    """
    try:
        if create:
            key = read_or_create_secret(path, lambda: os.urandom(STORE_KEY_BYTES))
        else:
            key = read_secret(path)
    except FileNotFoundError:
        raise StoreKeyError(f"{path} does not exist") from None
    except OSError as error:
        raise StoreKeyError(f"{path} cannot be read: {error.strerror}") from None
    if len(key) != STORE_KEY_BYTES:
        raise StoreKeyError(
            f"{path} holds {len(key)} bytes; a store key is {STORE_KEY_BYTES} random bytes "
            f"(`openssl rand -out {path} {STORE_KEY_BYTES}`)"
        )
    return CsrSealer(key)

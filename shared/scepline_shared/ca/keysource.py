"""Where the CA and RA private keys live: PEM files or a PKCS#11 token.

A generation directory (see :mod:`scepline_shared.ca.schedule`) records which
of its keys are in a token in ``keys.json``::

    {"ca": {"pkcs11_label": "scepline-ca", "pkcs11_id": "3f0c9a4d1e2b7c88"}, "ra": {...}}

A role absent from ``keys.json`` has its PEM file (``ca.key``/``ra.key``) beside
its certificate. So a generation can always be read back without knowing the
settings it was created with; the settings only say which token to open.

Keys we generate in a token get ``CKA_ID`` = the first 8 bytes of SHA-1 of their
label (:func:`key_id_for_label`): known before generation (python-pkcs11 fixes the
id at C_GenerateKeyPair), stable across re-runs, and distinct for the per-generation
labels (``scepline-ca``, ``scepline-ca-g1``...). Keys found in the token (a key
ceremony, an import) keep the id they have; ``keys.json`` records it either way.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pkcs11
from pkcs11 import Attribute, ObjectClass

from scepline_shared.ca.errors import CaMaterialError
from scepline_shared.keys import SigningKey, write_file_atomic
from scepline_shared.keys.pkcs11 import (
    KeyNotFound,
    Pkcs11PrivateKey,
    Pkcs11Token,
    generate_ca_keys,
    load_private_key,
)
from scepline_shared.log import get_logger

__all__ = [
    "KeyBackend",
    "KeySource",
    "Role",
    "TokenKeyEntry",
    "key_id_for_label",
    "key_location",
    "read_key_index",
    "write_key_index",
]

KeyBackend = Literal["file", "pkcs11"]
Role = Literal["ca", "ra", "ocsp"]

_log = get_logger(__name__)


def key_location(key: SigningKey) -> str:
    """Where a loaded key lives, for logs and `scepline ca show`: ``file`` or
    ``pkcs11 label='…' id=…`` (never the PIN)."""
    return f"pkcs11 {key.ref}" if isinstance(key, Pkcs11PrivateKey) else "file"


def key_id_for_label(label: str) -> bytes:
    """CKA_ID for a key we generate: SHA-1(label)[:8] (see the module doc)."""
    return hashlib.sha1(label.encode(), usedforsecurity=False).digest()[:8]


@dataclass(frozen=True, slots=True)
class TokenKeyEntry:
    """One ``keys.json`` entry: the key's CKA_LABEL and CKA_ID (None: no id)."""

    label: str
    id: bytes | None

    def __str__(self) -> str:
        return f"hsm_label={self.label!r}" + (f" id={self.id.hex()}" if self.id else "")


@dataclass(frozen=True)
class KeySource:
    """Where private keys are found and generated.

    ``file``: PEM files in the generation directory. ``pkcs11``: the CA key (and
    the RA key when ``ra_in_token``) in ``token`` under ``ca_key_label`` /
    ``ra_key_label``; generation n >= 1 appends ``-g<n>`` to the labels.
    """

    backend: KeyBackend
    token: Pkcs11Token | None = None
    ca_key_label: str = "scepline-ca"
    ra_key_label: str = "scepline-ra"
    ra_in_token: bool = True
    ocsp_key_label: str = "scepline-ocsp"

    def __post_init__(self) -> None:
        if self.backend not in ("file", "pkcs11"):
            raise ValueError(f"unknown key backend {self.backend!r} (expected 'file' or 'pkcs11')")
        if self.backend == "pkcs11" and not isinstance(self.token, Pkcs11Token):
            raise TypeError("the pkcs11 key backend needs a Pkcs11Token")
        if not self.ca_key_label or not self.ra_key_label or not self.ocsp_key_label:
            raise ValueError("key labels must not be empty")

    def in_token(self, role: Role) -> bool:
        """Whether new keys for ``role`` are generated in the token (the OCSP
        responder's key goes where the RA's goes: both sign for every request)."""
        if self.backend != "pkcs11":
            return False
        return role == "ca" or self.ra_in_token

    def label(self, role: Role, generation: int) -> str:
        """The token label for ``role`` in ``generation`` (0: the configured label)."""
        base = {"ca": self.ca_key_label, "ra": self.ra_key_label, "ocsp": self.ocsp_key_label}[role]
        return base if generation == 0 else f"{base}-g{generation}"

    def require_token(self, why: str) -> Pkcs11Token:
        if self.token is None:
            raise CaMaterialError(None, f"{why}, but the key backend is 'file' (no token)")
        return self.token

    def load(self, entry: TokenKeyEntry, *, where: Path) -> SigningKey:
        """The token key ``entry`` names; :class:`CaMaterialError` if it is not there.

        Token errors other than a missing key (token unreachable, login refused)
        propagate as :class:`~scepline_shared.keys.pkcs11.HsmError`: they are not
        a property of the CA material, and a caller may retry them.
        """
        token = self.require_token(f"{where} names a token key ({entry})")
        try:
            return load_private_key(token, entry.label, id=entry.id)
        except KeyNotFound as exc:
            raise CaMaterialError(
                where, f"token key {entry} not found on token {token.label!r}: {exc}"
            ) from exc

    def find(self, label: str) -> tuple[SigningKey, TokenKeyEntry] | None:
        """The one private key labelled ``label`` in the token, or None if there is none."""
        token = self.require_token(f"looking for the key {label!r}")
        try:
            key = load_private_key(token, label)
        except KeyNotFound:
            return None
        return key, TokenKeyEntry(label=label, id=_private_key_id(token, label))

    def generate(
        self, label: str, *, key_type: Literal["rsa", "ec"], size_or_curve: int | str
    ) -> tuple[SigningKey, TokenKeyEntry]:
        """Generate a key pair in the token: sensitive, never extractable."""
        token = self.require_token(f"generating the key {label!r}")
        entry = TokenKeyEntry(label=label, id=key_id_for_label(label))
        try:
            key = generate_ca_keys(
                token, key_type=key_type, size_or_curve=size_or_curve, label=label, id=entry.id
            )
        except ValueError as exc:  # label or id already taken on the token
            raise CaMaterialError(None, f"cannot generate {entry}: {exc}") from exc
        _log.info(
            "key generated in token",
            hsm_label=label,
            key_id=entry.id.hex() if entry.id else None,
            key_type=key_type,
            hsm_device=token.label,
        )
        return key, entry


def _private_key_id(token: Pkcs11Token, label: str) -> bytes | None:
    def operation(session: pkcs11.Session) -> bytes | None:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        return bytes(key[Attribute.ID]) or None

    return token.run(operation)


def read_key_index(path: Path) -> dict[Role, TokenKeyEntry]:
    """``keys.json`` as entries per role; empty if the file does not exist."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CaMaterialError(path, f"cannot read the key index: {exc}") from exc
    if not isinstance(raw, dict):
        raise CaMaterialError(path, "the key index is not a JSON object")
    index: dict[Role, TokenKeyEntry] = {}
    for role in ("ca", "ra", "ocsp"):
        item = raw.get(role)
        if item is None:
            continue
        label = item.get("pkcs11_label") if isinstance(item, dict) else None
        key_id = item.get("pkcs11_id") if isinstance(item, dict) else None
        if not isinstance(label, str) or not label or not isinstance(key_id, str | None):
            raise CaMaterialError(path, f"{role}: needs a pkcs11_label and a hex pkcs11_id")
        try:
            index[role] = TokenKeyEntry(label=label, id=bytes.fromhex(key_id) if key_id else None)
        except ValueError as exc:
            raise CaMaterialError(path, f"{role}: pkcs11_id {key_id!r} is not hex") from exc
    return index


def write_key_index(path: Path, index: dict[Role, TokenKeyEntry]) -> None:
    """Replace ``keys.json`` atomically (it names keys, no secrets: 0644)."""
    data = {
        role: {"pkcs11_label": entry.label, "pkcs11_id": entry.id.hex() if entry.id else None}
        for role, entry in sorted(index.items())
    }
    write_file_atomic(
        path, (json.dumps(data, indent=2) + "\n").encode(), mode=0o644, overwrite=True
    )

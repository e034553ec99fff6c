"""CA material: the CA and RA key pairs a SCEP front end signs and decrypts with.

On disk (lab mode) it lives in ``<data_dir>/ca/``: ``ca.key``, ``ca.crt``,
``ra.key``, ``ra.crt`` (PEM) plus ``.lock``, the flock file that serialises
creation (see :mod:`scepline_shared.ca.lab`).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from scepline_shared.ca.errors import CaMaterialError, CaNotInitialised
from scepline_shared.keys import KeyFileError, KeyPair, load_private_key, write_file_atomic

__all__ = [
    "CaMaterial",
    "CaPaths",
    "load_ca_material",
    "load_certificate",
    "save_certificate",
]


@dataclass(frozen=True, slots=True)
class CaMaterial:
    """Everything the SCEP layer needs from the CA.

    ``ca`` issues certificates and CRLs. ``ra`` signs CertReps and decrypts
    pkcsPKIEnvelopes (always RSA: SCEP key transport needs it). ``chain`` holds
    extra CA certificates published with GetCACert, e.g. the previous CA during a
    rollover; empty for the lab CA.
    """

    ca: KeyPair
    ra: KeyPair
    chain: tuple[x509.Certificate, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.ca, KeyPair) or not isinstance(self.ra, KeyPair):
            raise TypeError("ca and ra must be KeyPair instances")
        object.__setattr__(self, "chain", tuple(self.chain))
        if not all(isinstance(cert, x509.Certificate) for cert in self.chain):
            raise TypeError("chain must contain x509.Certificate values")


@dataclass(frozen=True, slots=True)
class CaPaths:
    """File locations of lab CA material under a data directory."""

    directory: Path
    ca_key: Path
    ca_cert: Path
    ra_key: Path
    ra_cert: Path
    lock: Path

    @classmethod
    def under(cls, data_dir: Path) -> CaPaths:
        directory = Path(data_dir) / "ca"
        return cls(
            directory=directory,
            ca_key=directory / "ca.key",
            ca_cert=directory / "ca.crt",
            ra_key=directory / "ra.key",
            ra_cert=directory / "ra.crt",
            lock=directory / ".lock",
        )

    @property
    def files(self) -> tuple[Path, Path, Path, Path]:
        return (self.ca_key, self.ca_cert, self.ra_key, self.ra_cert)


def load_ca_material(data_dir: Path) -> CaMaterial:
    """Load the lab CA material created by :func:`~scepline_shared.ca.lab.ensure_lab_ca`.

    Raises :class:`CaNotInitialised` (with the first missing path) if the material
    is absent and :class:`CaMaterialError` if it is present but unusable. Waits
    for a creation in progress in another process (shared lock), so it never
    sees a half-created CA.
    """
    paths = CaPaths.under(data_dir)
    if not paths.directory.is_dir():
        raise CaNotInitialised(paths.directory)
    with locked(paths, exclusive=False):
        return read_material(paths)


def read_material(paths: CaPaths) -> CaMaterial:
    """Load and cross-check the four files; the caller holds the lock."""
    for path in paths.files:
        if not path.exists():
            raise CaNotInitialised(path)
    ca = _key_pair(paths.ca_key, paths.ca_cert)
    ra = _key_pair(paths.ra_key, paths.ra_cert)
    try:
        ra.certificate.verify_directly_issued_by(ca.certificate)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CaMaterialError(paths.ra_cert, f"RA certificate not issued by the CA: {exc}") from exc
    return CaMaterial(ca=ca, ra=ra)


def _key_pair(key_path: Path, cert_path: Path) -> KeyPair:
    try:
        key = load_private_key(key_path)
    except KeyFileError as exc:
        raise CaMaterialError(key_path, exc.reason) from exc
    certificate = load_certificate(cert_path)
    try:
        return KeyPair(key=key, certificate=certificate)
    except ValueError as exc:
        raise CaMaterialError(cert_path, f"does not match {key_path.name}") from exc


def load_certificate(path: Path) -> x509.Certificate:
    """Load one PEM certificate; :class:`CaMaterialError` if it does not parse."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise CaMaterialError(path, f"not a PEM certificate: {exc}") from exc


def save_certificate(path: Path, certificate: x509.Certificate, *, overwrite: bool = False) -> None:
    """Write a PEM certificate atomically, world-readable (it is public)."""
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    write_file_atomic(path, pem, mode=0o644, overwrite=overwrite)


@contextmanager
def locked(paths: CaPaths, *, exclusive: bool) -> Iterator[None]:
    """Hold flock on ``paths.lock`` (exclusive to create, shared to read).

    flock locks belong to the open file description: never nest a shared and an
    exclusive lock in one process, they would deadlock. A reader without write
    access (or before first creation) falls back to an unlocked read, which is
    still safe for complete files because every file is written atomically.
    """
    fd: int | None = None
    if exclusive:
        fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    else:
        try:
            fd = os.open(paths.lock, os.O_RDONLY)
        except OSError:
            fd = None
    if fd is None:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the lock

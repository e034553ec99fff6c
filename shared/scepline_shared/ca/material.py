"""CA material: the CA and RA key pairs a SCEP front end signs and decrypts with.

On disk it lives in ``<data_dir>/ca/`` (generation 0) and ``<data_dir>/ca/next/<n>/``
(generations staged by a rollover): ``ca.crt``, ``ra.crt`` (PEM), the keys as
``ca.key``/``ra.key`` or named in ``keys.json`` when they are in a PKCS#11 token,
and for n >= 1 ``switch-at`` and ``next-ca.p7``. ``<data_dir>/ca/.lock`` is the
flock file that serialises creation (see :mod:`scepline_shared.ca.schedule`).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from scepline_shared.ca.errors import CaMaterialError
from scepline_shared.keys import KeyPair, write_file_atomic

__all__ = [
    "CaMaterial",
    "CaPaths",
    "load_certificate",
    "locked",
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
    """File locations of one CA generation (``lock`` is shared by all of them)."""

    directory: Path
    ca_key: Path
    ca_cert: Path
    ra_key: Path
    ra_cert: Path
    lock: Path

    @classmethod
    def under(cls, data_dir: Path) -> CaPaths:
        """Generation 0: ``<data_dir>/ca``."""
        return cls.in_directory(Path(data_dir) / "ca", lock=Path(data_dir) / "ca" / ".lock")

    @classmethod
    def generation(cls, data_dir: Path, number: int) -> CaPaths:
        """Generation ``number`` (0: :meth:`under`; n >= 1: ``<data_dir>/ca/next/<n>``)."""
        if number < 0:
            raise ValueError(f"generation numbers start at 0, got {number}")
        root = cls.under(data_dir)
        if number == 0:
            return root
        return cls.in_directory(root.next_directory / str(number), lock=root.lock)

    @classmethod
    def in_directory(cls, directory: Path, *, lock: Path) -> CaPaths:
        return cls(
            directory=directory,
            ca_key=directory / "ca.key",
            ca_cert=directory / "ca.crt",
            ra_key=directory / "ra.key",
            ra_cert=directory / "ra.crt",
            lock=lock,
        )

    @property
    def files(self) -> tuple[Path, Path, Path, Path]:
        """The four files of a file-backed generation."""
        return (self.ca_key, self.ca_cert, self.ra_key, self.ra_cert)

    @property
    def keys_index(self) -> Path:
        """``keys.json``: which keys are in a token (absent: all in files)."""
        return self.directory / "keys.json"

    @property
    def switch_at(self) -> Path:
        """ISO-8601 UTC time from which this generation is active (n >= 1)."""
        return self.directory / "switch-at"

    @property
    def next_ca_response(self) -> Path:
        """The GetNextCACert body announcing this generation (n >= 1)."""
        return self.directory / "next-ca.p7"

    @property
    def next_directory(self) -> Path:
        """``<data_dir>/ca/next``: where generations n >= 1 live (meaningful on gen 0)."""
        return self.directory / "next"

    @property
    def ocsp_key(self) -> Path:
        """The delegated OCSP responder's key, when it is a file (0600)."""
        return self.directory / "ocsp.key"

    @property
    def ocsp_cert(self) -> Path:
        """The delegated OCSP responder's certificate, renewed in place by the signer."""
        return self.directory / "ocsp.crt"

    def key(self, role: Literal["ca", "ra", "ocsp"]) -> Path:
        return {"ca": self.ca_key, "ra": self.ra_key, "ocsp": self.ocsp_key}[role]

    def certificate(self, role: Literal["ca", "ra", "ocsp"]) -> Path:
        return {"ca": self.ca_cert, "ra": self.ra_cert, "ocsp": self.ocsp_cert}[role]


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

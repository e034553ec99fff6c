"""File-backed private keys: PEM PKCS#8 load/save and key generation.

Only the lab CA and tests keep keys in files. Everything downstream takes the
cryptography private-key ABCs (:data:`SigningKey`), so an HSM-backed key (a
python-pkcs11 adapter subclassing the same ABCs) drops in without touching callers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Literal, TypeAlias

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scepline_shared.keys.parameters import key_parameters

__all__ = [
    "KeyFileError",
    "SigningKey",
    "generate_private_key",
    "load_private_key",
    "save_private_key",
    "write_file_atomic",
]

#: The key types a CA, RA or requester may hold. HSM adapters subclass these ABCs.
SigningKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

# Link-based no-clobber creation is unavailable on some filesystems (FAT, some FUSE
# mounts); there we fall back to exists-check + rename, which the callers' lock covers.
_NO_LINK_ERRNOS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV})


class KeyFileError(ValueError):
    """A key file exists but cannot be used (unparsable, wrong password, wrong type)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def generate_private_key(
    kind: Literal["rsa", "ec"], size_or_curve: int | str | ec.EllipticCurve
) -> SigningKey:
    """Generate an in-memory key.

    ``rsa``: ``size_or_curve`` is the modulus size in bits (>= 2048), exponent 65537.
    ``ec``: a curve size (256/384/521), a name (``"P-256"``, ``"secp384r1"``,
    ``"prime256v1"``...) or an :class:`~ec.EllipticCurve` instance.
    """
    parameters = key_parameters(kind, size_or_curve)
    if isinstance(parameters, int):
        return rsa.generate_private_key(public_exponent=65537, key_size=parameters)
    return ec.generate_private_key(parameters)


def load_private_key(path: Path, *, password: bytes | None = None) -> SigningKey:
    """Load a PEM private key (PKCS#8 or traditional) that is RSA or EC."""
    data = path.read_bytes()  # FileNotFoundError propagates: absence is not corruption
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as exc:
        # ValueError: not PEM / bad password; TypeError: password given/missing.
        raise KeyFileError(path, f"cannot load private key: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise KeyFileError(path, f"unsupported key type {type(key).__name__}")
    return key


def save_private_key(
    path: Path,
    key: SigningKey,
    *,
    password: bytes | None = None,
    overwrite: bool = False,
) -> None:
    """Write ``key`` as PEM PKCS#8 with mode 0600, atomically.

    With ``overwrite=False`` (default) an existing file is never replaced: the call
    raises :class:`FileExistsError`, so two processes racing on first start cannot
    silently swap each other's keys.
    """
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=encryption,
    )
    write_file_atomic(path, pem, mode=0o600, overwrite=overwrite)


def write_file_atomic(
    path: Path, data: bytes, *, mode: int = 0o600, overwrite: bool = False
) -> None:
    """Write ``data`` to ``path`` so readers see either no file or the whole file.

    The bytes go to a temp file in the same directory (created 0600 by mkstemp,
    then chmod'ed to ``mode`` before it becomes visible), are fsync'ed, then moved
    into place: ``os.replace`` when overwriting, ``os.link`` (fails if the target
    exists) otherwise. The directory is fsync'ed so the name survives a crash.
    """
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_no_clobber(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(directory)


def _link_no_clobber(tmp: Path, path: Path) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINK_ERRNOS:
            raise
        if path.exists():
            raise FileExistsError(errno.EEXIST, "file exists", str(path)) from exc
        os.replace(tmp, path)


def _fsync_dir(directory: Path) -> None:
    # Best effort: some platforms/filesystems refuse O_RDONLY fsync on directories.
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

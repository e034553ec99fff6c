"""Files and directories for scepline's own user only.

The data directory holds CA and RA keys, the state store (and its WAL), the
store key and the generated lab challenge: nothing in it is for other local
users. Directories are 0700 and files 0600 from the start; one left readable
by others (by an earlier version, or by hand) is tightened when this user owns
it, and reported when it does not.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from scepline_shared.keys.file import write_file_atomic
from scepline_shared.log import get_logger

__all__ = [
    "create_private_file",
    "keep_private",
    "private_directory",
    "read_or_create_secret",
    "read_secret",
]

log = get_logger(__name__)

_OTHERS = stat.S_IRWXG | stat.S_IRWXO


def private_directory(path: Path) -> Path:
    """`path` (with its parents) exists, and only its owner may enter it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    keep_private(path)
    return path


def keep_private(path: Path) -> None:
    """Take group and other permissions off `path` if it exists and has any."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return
    mode = stat.S_IMODE(status.st_mode)
    if not mode & _OTHERS:
        return
    tightened = mode & ~_OTHERS
    if status.st_uid != os.geteuid():
        log.warning(
            "readable by other local users, and owned by another user: change it by hand",
            path=str(path),
            mode=oct(mode),
        )
        return
    try:
        path.chmod(tightened)
    except OSError as error:  # a read-only mount, say
        log.warning(
            "readable by other local users, and cannot be changed",
            path=str(path),
            mode=oct(mode),
            error=error.strerror,
        )
        return
    log.warning(
        "was readable by other local users; now only by its owner",
        path=str(path),
        was=oct(mode),
        now=oct(tightened),
    )


def create_private_file(path: Path) -> None:
    """`path` exists (created empty if it did not) and only its owner may read it.

    For files another program fills in later, such as a SQLite database: SQLite
    gives its -wal and -shm files the database file's permissions.
    """
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    keep_private(path)


def read_secret(path: Path) -> bytes:
    """The bytes of a secret file, which is kept private (see `keep_private`)."""
    keep_private(path)
    return path.read_bytes()


def read_or_create_secret(path: Path, generate: Callable[[], bytes]) -> bytes:
    """The secret in `path`, created from `generate()` (mode 0600) if missing.

    Created by linking a complete temporary file into place, so processes that
    start together on one directory all end up with the secret of whichever
    linked first, and none ever reads a partial file.
    """
    with contextlib.suppress(FileNotFoundError):
        return read_secret(path)
    with contextlib.suppress(FileExistsError):
        write_file_atomic(path, generate(), mode=0o600)
    return read_secret(path)

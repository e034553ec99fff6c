"""The store key file: generated once per data directory and shared by every
process there, or given by the operator; refused clearly when unusable."""

from __future__ import annotations

import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from scepline_shared.store import (
    STORE_KEY_FILE,
    CsrSealer,
    StoreKeyError,
    UnreadableCsr,
    load_store_key,
)


def opens_what_the_other_sealed(one: CsrSealer, other: CsrSealer) -> bool:
    return other.open(one.seal(b"csr", "txn"), "txn") == b"csr"


def test_a_missing_key_is_generated_once_for_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / STORE_KEY_FILE

    first = load_store_key(path, create=True)
    again = load_store_key(path, create=True)

    assert opens_what_the_other_sealed(first, again)
    assert len(path.read_bytes()) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [STORE_KEY_FILE]  # no temporary file left


def test_processes_starting_together_end_up_with_one_key(tmp_path: Path) -> None:
    path = tmp_path / STORE_KEY_FILE
    together = threading.Barrier(16)

    def start() -> CsrSealer:
        together.wait()
        return load_store_key(path, create=True)

    with ThreadPoolExecutor(16) as pool:
        sealers = list(pool.map(lambda _: start(), range(16)))

    assert all(opens_what_the_other_sealed(sealers[0], sealer) for sealer in sealers)


def test_another_key_does_not_open_a_sealed_csr(tmp_path: Path) -> None:
    ours = load_store_key(tmp_path / "a.key", create=True)
    theirs = load_store_key(tmp_path / "b.key", create=True)

    with pytest.raises(UnreadableCsr, match="'txn'"):
        theirs.open(ours.seal(b"csr", "txn"), "txn")


def test_a_key_file_the_operator_names_must_exist(tmp_path: Path) -> None:
    path = tmp_path / "from-the-secret-store.key"

    with pytest.raises(StoreKeyError, match="does not exist"):
        load_store_key(path, create=False)
    assert not path.exists()


@pytest.mark.parametrize("content", [b"", b"too short", bytes(33)])
def test_a_key_of_the_wrong_size_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / STORE_KEY_FILE
    path.write_bytes(content)

    with pytest.raises(StoreKeyError, match=f"holds {len(content)} bytes; a store key is 32"):
        load_store_key(path, create=True)


def test_an_unreadable_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / STORE_KEY_FILE).mkdir()

    with pytest.raises(StoreKeyError, match="cannot be read"):
        load_store_key(tmp_path / STORE_KEY_FILE, create=True)


def test_the_key_never_shows(tmp_path: Path) -> None:
    path = tmp_path / STORE_KEY_FILE
    sealer = load_store_key(path, create=True)
    key = path.read_bytes()

    assert key.hex() not in repr(sealer) and str(key) not in repr(sealer)

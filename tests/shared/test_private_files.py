"""The data directory and the secrets in it are for scepline's own user only."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from scepline_shared.private_files import private_directory, read_or_create_secret


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """The common 022: what is left to the umask would be readable by everyone."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_data_directory_is_the_owners_only(tmp_path: Path) -> None:
    data_dir = private_directory(tmp_path / "new" / "var")

    assert _mode(data_dir) == 0o700


def test_an_existing_data_directory_open_to_others_is_tightened_and_said_so(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir(mode=0o755)

    with capture_logs() as logs:
        private_directory(data_dir)

    assert _mode(data_dir) == 0o700
    [line] = logs
    assert line["log_level"] == "warning" and line["path"] == str(data_dir)
    assert (line["was"], line["now"]) == ("0o755", "0o700")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_a_file_of_another_user_is_reported_not_changed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"x")
    secret.chmod(0o644)
    os.chown(secret, 65534, -1)

    with capture_logs() as logs:
        assert read_or_create_secret(secret, lambda: b"new") == b"x"

    assert _mode(secret) == 0o644
    assert [line["path"] for line in logs if line["log_level"] == "warning"] == [str(secret)]


def test_a_secret_is_created_once_owner_only_and_then_read(tmp_path: Path) -> None:
    created = read_or_create_secret(tmp_path / "secret", lambda: b"first")
    again = read_or_create_secret(tmp_path / "secret", lambda: b"second")

    assert created == again == b"first"
    assert _mode(tmp_path / "secret") == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]  # no temporary file left


def test_a_secret_left_readable_by_others_is_tightened(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"kept")
    secret.chmod(0o644)

    assert read_or_create_secret(secret, lambda: b"new") == b"kept"
    assert _mode(secret) == 0o600

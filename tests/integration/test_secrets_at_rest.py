"""What ``scepline`` leaves on disk is for its own user only, and the store
holds no enrolment challenge: checked on a real ``scepline up`` process with the
operator's usual umask (022), after a real enrolment."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from scepline_devtools.scep_client import ScepClient, build_csr
from scepline_shared.scep import PkiStatus
from scepline_validator.main import LAB_CHALLENGE_FILE
from tests.fixtures.processes import free_port, scepline_up
from tests.fixtures.scepline import data_dir_with_ca
from tests.support.commands import run_scepline
from tests.support.pki import name, requester


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_scepline_up_keeps_its_files_private_and_stores_no_challenge(tmp_path: Path):
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    data_dir.chmod(0o755)  # as an earlier version (or a careless mkdir) left it
    previous_umask = os.umask(0o022)  # the operator's usual umask, inherited by the process
    try:
        with scepline_up(data_dir, ca_key_size="2048") as (url, process):
            challenge = (data_dir / LAB_CHALLENGE_FILE).read_text().strip()
            device = requester("private-files")
            csr = build_csr(device.key, name("private-files"), challenge=challenge)
            client = ScepClient(url)
            try:
                reply = await client.enrol(csr, device, transaction_id="tx-private")
            finally:
                await client.aclose()
            assert reply.status is PkiStatus.SUCCESS

            database = data_dir / "scepline.db"
            wal, shm = database.with_name("scepline.db-wal"), database.with_name("scepline.db-shm")
            # Read while the process runs, so -wal and -shm exist; the request is in
            # the WAL or, once checkpointed, in the main file: both are read.
            on_disk = b"".join(path.read_bytes() for path in (database, wal))
            modes = {
                path.relative_to(data_dir).as_posix(): _mode(path)
                for path in (
                    database,
                    wal,
                    shm,
                    data_dir / "store.key",
                    data_dir / LAB_CHALLENGE_FILE,
                    *(data_dir / "ca").rglob("*.key"),
                )
            }
            data_dir_mode = _mode(data_dir)
    finally:
        os.umask(previous_umask)

    assert data_dir_mode == 0o700
    assert modes == {path: 0o600 for path in modes}
    assert {"ca/ca.key", "ca/ra.key"} <= set(modes)
    assert challenge.encode() not in on_disk
    assert csr.public_bytes(Encoding.DER) not in on_disk
    assert challenge not in process.log


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"too short", "holds 9 bytes; a store key is 32 random bytes"),
        (None, "does not exist"),
    ],
)
def test_a_bad_store_key_file_is_refused_at_start_up(
    tmp_path: Path, lab_ca_dir: Path, content: bytes | None, says: str
):
    key_file = tmp_path / "store.key"
    if content is not None:
        key_file.write_bytes(content)
    env = {
        "SCEPLINE_DATA_DIR": str(data_dir_with_ca(tmp_path, lab_ca_dir)),
        "SCEPLINE_STORE_KEY_FILE": str(key_file),
        # Bound, never served: it must stop before.
        "SCEPLINE_HTTP_PORT": str(free_port()),
        "SCEPLINE_HEALTH_PORT": str(free_port()),
    }

    done = run_scepline(env, "up")

    assert done.returncode == 1, done.stdout + done.stderr
    assert "SCEPLINE_STORE_KEY_FILE" in done.stderr and says in done.stderr
    assert str(key_file) in done.stderr
    assert "Traceback" not in done.stderr

"""What ``scepline`` leaves on disk is for its own user only: checked on a real
``scepline up`` process with the operator's usual umask (022), after a real
enrolment."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from scepline_shared.scep import PkiStatus
from scepline_shared.scep_client import ScepClient, build_csr
from scepline_validator.main import LAB_CHALLENGE_FILE
from tests.fixtures.processes import scepline_up
from tests.support.pki import name, requester


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_scepline_up_keeps_its_files_private(tmp_path: Path):
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
            # Read while the process runs, so -wal and -shm exist.
            modes = {
                path.relative_to(data_dir).as_posix(): _mode(path)
                for path in (
                    database,
                    wal,
                    shm,
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
    assert challenge not in process.log

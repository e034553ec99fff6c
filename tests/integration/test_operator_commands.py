"""Operator commands answer clearly, as their own processes: exit 2 for a
malformed argument, 1 for "nothing there" (naming what was asked for), never a
traceback; they say which database they looked for when there is none, and
they stop quietly when the reader of their output goes away."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scepline_devtools.scep_client import build_csr
from scepline_shared.scep import ContentEncryption, FailInfo, PkiStatus
from tests.fixtures.scepline import CHALLENGE, RunningScepline
from tests.support.commands import run_scepline
from tests.support.exchange import Exchange
from tests.support.pki import name, requester


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A data directory holding an empty, migrated database."""
    data_dir = tmp_path / "var"
    done = run_scepline({"SCEPLINE_DATA_DIR": str(data_dir)}, "db", "upgrade")
    assert done.returncode == 0, done.stderr
    assert "database schema is at head" in done.stdout
    return data_dir


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["cert", "show", "not-hex"], 2, "not a hexadecimal serial number"),
        (["cert", "revoke", "not-hex"], 2, "not a hexadecimal serial number"),
        (["cert", "revoke", "00"], 2, "serial '00' is 0, which is not a valid serial"),
        (["cert", "show", "abc123"], 1, "no certificate with serial abc123"),
        (["cert", "revoke", "abc123"], 1, "no certificate with serial abc123"),
        (["cert", "find", " "], 2, "give part of a subject"),
        (["cert", "find", "no-such-device"], 1, "0 certificate(s)"),
        (["request", "show", "no-such-tx"], 1, "no request with transaction id 'no-such-tx', and"),
        (["request", "list", "--limit", "0"], 2, "at least 1"),
        (["request", "list", "--state", "PENDING"], 2, "invalid choice"),
        (["dlq", "show", "nope"], 1, "no dead letter with id 'nope'"),
        (["dlq", "replay", "nope"], 1, "no dead letter with id 'nope'"),
        (["dlq", "purge", "--step", "sign", "nope", "nah"], 1, "id 'nope', 'nah' in the sign"),
    ],
)
def test_bad_input_gets_a_clear_answer(store_dir: Path, args: list[str], code: int, says: str):
    done = run_scepline({"SCEPLINE_DATA_DIR": str(store_dir)}, *args)

    assert done.returncode == code, done.stdout + done.stderr
    assert says in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_state_names_are_read_in_any_case(store_dir: Path):
    env = {"SCEPLINE_DATA_DIR": str(store_dir)}
    done = run_scepline(env, "request", "list", "--state", "issued")

    assert done.returncode == 0, done.stderr
    assert "0 request(s) in ISSUED" in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["cert", "find", "x"],
        ["cert", "show", "1f"],
        ["request", "list"],
        ["request", "show", "tx"],
        ["dlq", "list"],
        ["db", "prune", "--older-than-days", "30"],
        ["ca", "journal"],
    ],
)
def test_a_command_run_where_there_is_no_database_says_where_it_looked(
    tmp_path: Path, args: list[str]
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SCEPLINE_")}

    done = subprocess.run(
        [sys.executable, "-m", "scepline", *args],
        cwd=elsewhere,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 1, done.stdout + done.stderr
    expected = elsewhere / "var" / "scepline.db"
    assert (
        f"no scepline database at {expected} (SCEPLINE_DATA_DIR unset: ./var of {elsewhere})"
        in done.stderr
    )
    assert "set SCEPLINE_DATA_DIR or SCEPLINE_DATABASE_URL" in done.stderr
    assert list(elsewhere.iterdir()) == []  # nothing created
    assert "Traceback" not in done.stderr


def test_the_data_directory_named_is_the_one_reported(tmp_path: Path):
    empty = tmp_path / "empty"

    done = run_scepline({"SCEPLINE_DATA_DIR": str(empty)}, "request", "list")

    assert done.returncode == 1
    assert f"no scepline database at {empty / 'scepline.db'} (SCEPLINE_DATA_DIR={empty})" in (
        done.stderr
    )
    assert not empty.exists()


async def test_revoking_prints_the_reason_by_name_and_a_second_revoke_says_when_it_was_done(
    scepline: RunningScepline,
):
    who = requester("revoked-twice")
    issued = await scepline.client.enrol(
        build_csr(who.key, name("revoked-twice"), challenge=CHALLENGE), who
    )
    assert issued.status is PkiStatus.SUCCESS
    serial = f"{issued.certificates[0].serial_number:x}"
    env = {"SCEPLINE_DATA_DIR": str(scepline.settings.data_dir)}

    first = run_scepline(env, "cert", "revoke", serial, "--reason", "keyCompromise")
    second = run_scepline(env, "cert", "revoke", serial, "--reason", "superseded")
    shown = run_scepline(env, "cert", "show", serial)

    assert first.returncode == 0, first.stderr
    assert "revoked at " in first.stdout and "(key-compromise)" in first.stdout
    revoked_at = first.stdout.split("revoked at ")[1].split(" ")[0]
    assert second.returncode == 0, second.stderr
    assert f"already revoked at {revoked_at} (key-compromise); unchanged" in second.stdout
    assert f"status       revoked at {revoked_at} (key-compromise)" in shown.stdout


async def test_output_into_a_closed_pipe_ends_quietly(scepline: RunningScepline):
    who = requester("piped")
    issued = await scepline.client.enrol(
        build_csr(who.key, name("piped"), challenge=CHALLENGE), who, transaction_id="tx-piped"
    )
    assert issued.status is PkiStatus.SUCCESS
    env = {**os.environ, "SCEPLINE_DATA_DIR": str(scepline.settings.data_dir)}

    for args in (["request", "show", "tx-piped"], ["cert", "find", "piped"]):
        status, errors = await asyncio.to_thread(into_a_closed_pipe, env, args)

        assert "Traceback" not in errors and "BrokenPipeError" not in errors, errors
        assert status == 141, errors


def into_a_closed_pipe(env: dict[str, str], args: list[str]) -> tuple[int, str]:
    """`scepline ARGS | head -0`: the reader is gone before anything is written."""
    process = subprocess.Popen(
        [sys.executable, "-m", "scepline", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    errors = process.stderr.read().decode()
    return process.wait(60), errors


async def test_a_request_refused_before_it_was_recorded_is_shown_with_the_reason(
    scepline: RunningScepline,
):
    refused = await Exchange(scepline).enrol(
        requester("des"), encryption=ContentEncryption.DES_CBC, transaction_id="tx-des"
    )
    assert refused.fail_info is FailInfo.BAD_ALG
    env = {"SCEPLINE_DATA_DIR": str(scepline.settings.data_dir)}

    shown = await asyncio.to_thread(run_scepline, env, "request", "show", "tx-des")

    assert shown.returncode == 0, shown.stderr
    assert "transaction  tx-des" in shown.stdout
    assert "not recorded: refused before it was recorded" in shown.stdout
    assert "PKCS_REQ  failInfo badAlg  content encryption" in shown.stdout
    assert "SCEPLINE_SCEP_ALLOW_DES=true accepts it" in shown.stdout

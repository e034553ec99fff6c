"""Operator commands given bad input answer clearly (exit 2 for a malformed
argument, 1 for "nothing there"), never with a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.commands import run_scepline


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["cert", "show", "not-hex"], 2, "not a hexadecimal serial number"),
        (["cert", "revoke", "not-hex"], 2, "not a hexadecimal serial number"),
        (["cert", "show", "abc123"], 1, "no certificate with serial abc123"),
        (["cert", "find", " "], 2, "give part of a subject"),
        (["cert", "find", "no-such-device"], 1, "0 certificate(s)"),
        (["request", "list", "--limit", "0"], 2, "at least 1"),
        (["request", "list", "--state", "PENDING"], 2, "invalid choice"),
    ],
)
def test_bad_input_gets_a_clear_answer(tmp_path: Path, args: list[str], code: int, says: str):
    done = run_scepline({"SCEPLINE_DATA_DIR": str(tmp_path)}, *args)

    assert done.returncode == code, done.stdout + done.stderr
    assert says in done.stdout + done.stderr
    assert "Traceback" not in done.stderr

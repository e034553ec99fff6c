"""A mistyped setting stops every command with one line per bad setting: the
environment variable, what is wrong with its value and what it accepts; exit 2,
no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.commands import run_scepline


def problem_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("SCEPLINE_HTTP_PORT", "abc", ["'abc'", "not a whole number", "from 1 to 65535"]),
        ("SCEPLINE_HTTP_PORT", "0", ["'0'", "out of range", "from 1 to 65535"]),
        ("SCEPLINE_CHALLENGE_PROVIDER", "intun", ["'intun'", "static, intune"]),
        ("SCEPLINE_SCEP_ALLOW_DES", "maybe", ["'maybe'", "true or false"]),
        ("SCEPLINE_SYNC_WAIT_SECONDS", "soon", ["'soon'", "not a number", "at least 0"]),
        ("SCEPLINE_INTUNE_GRAPH_URL", "http://graph", ["must be an https:// URL"]),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    tmp_path: Path, variable: str, value: str, says: list[str]
):
    done = run_scepline({"SCEPLINE_DATA_DIR": str(tmp_path), variable: value}, "request", "list")

    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    [line] = problem_lines(done.stderr)
    assert line.startswith(f"scepline: {variable}"), line
    for words in says:
        assert words in line, line
    assert done.stdout == ""


def test_several_bad_settings_get_a_line_each(tmp_path: Path):
    done = run_scepline(
        {
            "SCEPLINE_DATA_DIR": str(tmp_path),
            "SCEPLINE_HTTP_PORT": "abc",
            "SCEPLINE_CHALLENGE_PROVIDER": "intun",
            "SCEPLINE_WORKER_PREFETCH": "0",
        },
        "up",
    )

    assert done.returncode == 2, done.stdout + done.stderr
    lines = problem_lines(done.stderr)
    assert len(lines) == 3, lines
    assert [line.split("=")[0] for line in lines] == [
        "scepline: SCEPLINE_HTTP_PORT",
        "scepline: SCEPLINE_CHALLENGE_PROVIDER",
        "scepline: SCEPLINE_WORKER_PREFETCH",
    ]
    assert "from 1 to 1000" in lines[2]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "ca").exists()  # nothing started


def test_settings_that_only_go_together_say_what_is_missing(tmp_path: Path):
    done = run_scepline(
        {"SCEPLINE_DATA_DIR": str(tmp_path), "SCEPLINE_KEY_BACKEND": "pkcs11"}, "ca", "show"
    )

    assert done.returncode == 2
    [line] = problem_lines(done.stderr)
    assert "SCEPLINE_KEY_BACKEND=pkcs11 needs SCEPLINE_PKCS11_MODULE" in line
    assert "Value error" not in line


def test_a_secret_setting_is_never_echoed(tmp_path: Path):
    done = run_scepline(
        {
            "SCEPLINE_DATA_DIR": str(tmp_path),
            "SCEPLINE_HTTP_PORT": "abc",
            "SCEPLINE_PKCS11_PIN": "s3cret-pin",
            "SCEPLINE_KEY_BACKEND": "pkcs11",
        },
        "ca",
        "show",
    )

    assert done.returncode == 2
    assert "s3cret-pin" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("SCEPLINE_CERT_KEY_USAGE", "digital_signature,bogus", "unknown key usage 'bogus'"),
        ("SCEPLINE_CERT_EXTENDED_KEY_USAGE", "client-auht", "unknown extended key usage"),
        ("SCEPLINE_CERT_KEY_TYPES", "rsa,P-999", "unknown key type 'P-999'"),
    ],
)
@pytest.mark.parametrize("command", ["up", "signer", "validator"])
def test_a_bad_certificate_profile_name_stops_the_services_that_use_it(
    tmp_path: Path, command: str, variable: str, value: str, says: str
):
    done = run_scepline(
        {
            "SCEPLINE_DATA_DIR": str(tmp_path / "var"),
            "SCEPLINE_HTTP_PORT": "1",  # never reached
            variable: value,
        },
        command,
    )

    assert done.returncode == 2, done.stdout + done.stderr
    [line] = problem_lines(done.stderr)
    assert line.startswith(f"scepline: {variable}"), line
    assert says in line and ("known:" in line or "one of:" in line), line
    assert "serving" not in done.stdout
    assert not (tmp_path / "var").exists()  # refused before creating anything

"""A process that cannot start says why in one line and exits non-zero, before
any "serving" banner: a busy port (the SCEP port or the health port), a
database it cannot open, a CA that was never created."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scepline.connections import runtime
from scepline.errors import CommandError
from scepline_shared.settings import Settings
from tests.fixtures.processes import free_port
from tests.support.commands import run_scepline


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


def the_one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("scepline: ")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_a_busy_scep_port_stops_scepline_up_before_anything_starts(tmp_path: Path, busy_port: int):
    data_dir = tmp_path / "var"
    done = run_scepline(
        {
            "SCEPLINE_DATA_DIR": str(data_dir),
            "SCEPLINE_HTTP_PORT": str(busy_port),
            "SCEPLINE_HEALTH_PORT": str(free_port()),
        },
        "up",
    )

    assert done.returncode == 1, done.stdout + done.stderr
    line = the_one_line(done.stderr)
    assert f"cannot listen on 127.0.0.1:{busy_port}" in line
    assert "SCEPLINE_HTTP_PORT" in line and "in use" in line
    assert "serving" not in done.stdout
    assert not data_dir.exists()  # no CA, no database: nothing was started


def test_a_busy_health_port_stops_scepline_up_too(tmp_path: Path, busy_port: int):
    done = run_scepline(
        {
            "SCEPLINE_DATA_DIR": str(tmp_path / "var"),
            "SCEPLINE_HTTP_PORT": str(free_port()),
            "SCEPLINE_HEALTH_PORT": str(busy_port),
        },
        "up",
    )

    assert done.returncode == 1
    line = the_one_line(done.stderr)
    assert f"cannot listen on 127.0.0.1:{busy_port}" in line and "SCEPLINE_HEALTH_PORT" in line
    assert "serving" not in done.stdout


def test_a_database_that_cannot_be_opened_stops_scepline_up(tmp_path: Path):
    database = tmp_path / "no-such-directory" / "scepline.db"
    done = run_scepline(
        {
            "SCEPLINE_DATA_DIR": str(tmp_path / "var"),
            "SCEPLINE_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
            "SCEPLINE_HTTP_PORT": str(free_port()),
            "SCEPLINE_HEALTH_PORT": str(free_port()),
        },
        "up",
    )

    assert done.returncode == 1
    line = the_one_line(done.stderr)
    assert f"could not open the database sqlite+aiosqlite:///{database}" in line
    assert "unable to open database file" in line
    assert "serving" not in done.stdout


@pytest.mark.parametrize("service", ["ingress", "signer"])
def test_a_service_started_without_a_ca_says_to_create_it(tmp_path: Path, service: str):
    data_dir = tmp_path / "var"
    env = {
        "SCEPLINE_DATA_DIR": str(data_dir),
        "SCEPLINE_HTTP_PORT": str(free_port()),
        "SCEPLINE_HEALTH_PORT": str(free_port()),
    }
    assert run_scepline(env, "db", "upgrade").returncode == 0

    done = run_scepline(env, service)

    assert done.returncode == 1
    line = the_one_line(done.stderr)
    assert f"no CA: CA material not initialised: {data_dir / 'ca'} is missing" in line
    assert "`scepline ca init`" in line


def test_an_operator_command_does_not_wait_for_an_unreachable_database_server():
    started = time.monotonic()
    done = run_scepline(
        {"SCEPLINE_DATABASE_URL": "postgresql://scepline:secret@127.0.0.1:1/scepline"},
        "request",
        "list",
    )

    assert done.returncode == 1
    line = the_one_line(done.stderr)
    assert "could not open the database postgresql://scepline:***@127.0.0.1:1/scepline" in line
    assert "secret" not in done.stderr
    assert time.monotonic() - started < 30


async def test_services_wait_for_the_database_server_then_say_what_failed(tmp_path: Path):
    settings = Settings(
        data_dir=tmp_path, database_url="postgresql://scepline@127.0.0.1:1/scepline"
    )
    started = time.monotonic()

    with pytest.raises(CommandError, match=r"could not open the database .*\(tried for 2 s\)"):
        async with runtime(settings, with_broker=False, patience=2):
            pass

    assert 1.5 < time.monotonic() - started < 20

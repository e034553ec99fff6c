"""The admin port of ``scepline up`` on one process (``SCEPLINE_WORKERS=1``:
the product and the console in the same process), and a busy admin port,
which stops ``scepline up`` before anything starts, like the other ports."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from tests.fixtures.processes import free_port, scepline_up
from tests.support.commands import run_scepline


def test_scepline_up_on_one_process_serves_the_console_and_the_api(tmp_path: Path):
    data_dir = tmp_path / "var"
    with scepline_up(data_dir, workers="1", static_challenge="one process") as (url, process):
        env = {"SCEPLINE_DATA_DIR": str(data_dir)}
        created = run_scepline(env, "admin", "token", "create", "--role", "viewer")
        assert created.returncode == 0, created.stderr
        headers = {"authorization": f"Bearer {created.stdout.splitlines()[-1]}"}
        with httpx.Client(base_url=process.admin_url, headers=headers, timeout=30) as api:
            health = api.get("/api/v1/health").json()
            figures = api.get("/api/v1/dashboard").json()
            login = httpx.get(f"{process.admin_url}/login")
        scep = httpx.get(url.removesuffix("/scep") + "/api/v1/health", headers=headers)

    assert health["status"] == "ok", health
    assert health["serving"]["ready"] is True
    assert health["broker"] == {
        "ok": True,
        "kind": "in-process",
        "detail": "inside each serving process of scepline up",
    }
    assert health["intune"] == {"configured": False}
    # On one process the console reads the in-process broker itself.
    assert figures["queues"] == {
        f"{step}.{kind}": 0
        for step in ("validate", "sign", "notify")
        for kind in ("work", "retry", "dlq")
    }
    assert login.status_code == 200 and 'type="password"' in login.text
    assert scep.status_code == 404
    assert f"Console at {process.admin_url}/ and management API at" in process.log


def test_a_busy_admin_port_stops_scepline_up_before_anything_starts(tmp_path: Path):
    data_dir = tmp_path / "var"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        done = run_scepline(
            {
                "SCEPLINE_DATA_DIR": str(data_dir),
                "SCEPLINE_HTTP_PORT": str(free_port()),
                "SCEPLINE_HEALTH_PORT": str(free_port()),
                "SCEPLINE_ADMIN_PORT": str(busy),
            },
            "up",
        )

    assert done.returncode == 1, done.stdout + done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("scepline: ")]
    assert f"cannot listen on 127.0.0.1:{busy}" in line and "SCEPLINE_ADMIN_PORT" in line
    assert "serving" not in done.stdout and "Traceback" not in done.stderr
    assert not data_dir.exists()

"""The README's first certificate, as a reader follows it: the commands are
read from README.md (the blocks after ``<!-- quickstart: ... -->``), so this
test breaks when the README drifts.

``scripts/up`` is started from another directory than the clone, with the
README's settings; the enrolment block runs as written, with the client the
README says to install (Debian's ``scepclient``), in a directory standing in
for the clone (its ``var/`` is the data directory) and a home of its own. Both
run in a private network namespace, so the README's ports (8080, 9100) are
used as written without meeting anything else on this machine; where no
namespace can be made, those two ports are swapped for free ones.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.processes import free_port

pytestmark = pytest.mark.interop

REPOSITORY = Path(__file__).resolve().parents[2]
README = REPOSITORY / "README.md"

# Starts the README's server command in the background, waits until it serves,
# runs the README's enrolment commands, stops the server: in a network
# namespace of its own when run under `unshare -n`.
DRIVER = r"""
set -u
if [ -n "${PRIVATE_NETWORK:-}" ]; then ip link set lo up; fi
cd "$ELSEWHERE"
setsid bash -c "$SERVE" > "$SERVER_LOG" 2>&1 &
server=$!
ready=""
for _ in $(seq 1 480); do
    if "$PYTHON" -c "import httpx, sys; sys.exit(httpx.get('$READY_URL').status_code != 200)" \
        2>/dev/null; then ready=yes; break; fi
    kill -0 "$server" 2>/dev/null || break
    sleep 0.5
done
status=3
if [ -n "$ready" ]; then
    cd "$CLONE"
    bash -euo pipefail -c "$ENROL" > "$ENROL_LOG" 2>&1
    status=$?
fi
kill -INT -- "-$server" 2>/dev/null
wait "$server"
exit $status
"""


def readme_block(name: str) -> str:
    """The shell block that follows ``<!-- quickstart: NAME -->`` in README.md."""
    text = README.read_text()
    marker = f"<!-- quickstart: {name} -->"
    assert marker in text, f"README.md lost its {marker} block"
    found = re.match(r"\s*```sh\n(.*?)```", text.split(marker, 1)[1], re.DOTALL)
    assert found, f"no ```sh block after {marker}"
    return found.group(1)


def private_network_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = ["unshare", "-n", "true"] if os.geteuid() == 0 else ["unshare", "-rn", "true"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def test_the_readme_installs_the_client_the_enrolment_uses():
    assert readme_block("install").split() == ["sudo", "apt-get", "install", "-y", "scep"]
    assert "scepclient " in readme_block("enrol")
    client = shutil.which("scepclient")
    assert client is not None, "the Debian package scep is not installed"
    owner = subprocess.run(["dpkg", "-S", client], capture_output=True, text=True, check=False)
    assert owner.stdout.startswith("scep:"), owner.stdout + owner.stderr


def test_the_readme_enrols_a_first_device_as_written(tmp_path: Path):
    uv = shutil.which("uv")
    if uv is None:
        if os.environ.get("CI"):
            pytest.fail("uv is not on PATH (scripts/up and the README use it)")
        pytest.skip("uv is not on PATH")
    serve, enrol = readme_block("serve"), readme_block("enrol")
    assert serve.split()[-1] == "scripts/up"
    # The one change: called by its path, from a directory that is not the clone.
    serve = serve.replace("scripts/up", str(REPOSITORY / "scripts" / "up"))
    clone, elsewhere, home = tmp_path / "clone", tmp_path / "elsewhere", tmp_path / "home"
    for directory in (clone, elsewhere, home):
        directory.mkdir()
    uv_cache = subprocess.run([uv, "cache", "dir"], capture_output=True, text=True, check=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SCEPLINE_")},
        "HOME": str(home),  # the README's ~/device-1
        "UV_CACHE_DIR": uv_cache.stdout.strip(),
        "UV_PROJECT": str(REPOSITORY),  # `uv run` from the stand-in for the clone
        "PATH": f"{Path(uv).parent}{os.pathsep}{os.environ['PATH']}",
        # scripts/up keeps its data in the clone's var/; here, the stand-in's.
        "SCEPLINE_DATA_DIR": str(clone / "var"),
        "ELSEWHERE": str(elsewhere),
        "CLONE": str(clone),
        "PYTHON": sys.executable,
        "SERVER_LOG": str(tmp_path / "server.log"),
        "ENROL_LOG": str(tmp_path / "enrol.log"),
    }
    if private_network_available():
        command = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
        env |= {"PRIVATE_NETWORK": "yes", "READY_URL": "http://127.0.0.1:8080/readyz"}
    else:
        port = free_port()
        serve = f"SCEPLINE_HTTP_PORT={port} SCEPLINE_HEALTH_PORT={free_port()} {serve}"
        enrol = enrol.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        command, env["READY_URL"] = [], f"http://127.0.0.1:{port}/readyz"

    # Pasted twice: the second time, scepclient renews the certificate it holds.
    done = subprocess.run(
        [*command, "bash", "-c", DRIVER],
        env={**env, "SERVE": serve, "ENROL": f"{enrol}\n{enrol}"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    server_log = (tmp_path / "server.log").read_text(errors="replace")
    enrol_log = (
        (tmp_path / "enrol.log").read_text(errors="replace")
        if (tmp_path / "enrol.log").exists()
        else ""
    )
    context = f"driver: {done.stderr[-2000:]}\nserver:\n{server_log[-4000:]}\nenrol:\n{enrol_log}"
    assert done.returncode == 0, context
    assert "scepline serving SCEP at http://127.0.0.1:" in server_log
    assert f"Static challenge (generated): {clone / 'var' / 'static-challenge'}" in server_log
    # What the README says the reader sees.
    assert re.search(r"subject=.*CN = device-1", enrol_log), context
    assert "issuer=CN = scepline lab CA" in enrol_log, context
    assert re.search(r"\n1 certificate\(s\)", enrol_log), context
    assert re.search(r"\n2 certificate\(s\)", enrol_log), context
    assert '"message_type": "RENEWAL_REQ"' in server_log  # the second time, a renewal
    assert {p.name for p in (home / "device-1").iterdir()} == {
        "device.key",
        "csr.pem",
        "device.pem",
    }
    assert not (elsewhere / "var").exists()  # nothing landed where it was started

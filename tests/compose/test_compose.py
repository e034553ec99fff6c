"""docker-compose.yml and the Dockerfile, run for real on a local Docker engine.

The stack comes up as an operator brings it up (`docker-compose up -d` with
SCEPLINE_STATIC_CHALLENGE and replica counts), with two validators and two signers,
and strongSwan's ``pki --scep`` enrols through the published ingress port. Then
the signer holding a request in flight is killed (``docker kill``) and the other
replica finishes the request.

No image registry is reachable where this runs, so ``base-images.sh`` builds the
images docker-compose.yml names from Debian's packages and
``docker-compose.test.yml`` swaps them in; the scepline image is the repository's
Dockerfile built on that base. Needs a Docker engine, ``docker-compose`` and, for
the first run, ``debootstrap`` (scripts/test installs them and starts the engine):
without them the tests skip, and under CI they fail.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from tests.fixtures.processes import free_port
from tests.interop.clients import EnrolResult, enrol_strongswan
from tests.interop.test_clients import common_name, openssl_verify, san_values

pytestmark = pytest.mark.compose

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
COMPOSE_FILES = (
    "-f",
    str(REPO / "docker-compose.yml"),
    "-f",
    str(HERE / "docker-compose.test.yml"),
)
CHALLENGE = secrets.token_hex(16)
REPLICAS = {"ingress": 1, "validator": 2, "signer": 2, "notifier": 1}
DATA_DIR = "/var/lib/scepline"  # the shared volume, as the Dockerfile sets it


def _run(
    argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a command that must succeed; its output is the failure message if not."""
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        pytest.fail(f"{' '.join(argv)} exited {done.returncode}\n{output}")
    return done


def _require_docker() -> None:
    """Skip without a Docker engine and docker-compose; fail instead under CI."""
    problems = [
        f"{tool} is not installed"
        for tool in ("docker", "docker-compose")
        if not shutil.which(tool)
    ]
    if not problems:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if info.returncode != 0:
            problems.append(f"the Docker engine does not answer: {info.stderr.strip()[-500:]}")
    if not problems:
        return
    reason = (
        "; ".join(problems) + " (scripts/test installs docker.io, docker-compose and "
        "debootstrap, and starts dockerd; its log is /var/log/dockerd.log)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)")
    pytest.skip(reason)


@contextlib.contextmanager
def _one_compose_test_per_machine() -> Iterator[None]:
    """The test images have fixed names: a second run on this machine waits its turn."""
    with open(Path(tempfile.gettempdir()) / "scepline-compose-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@dataclass
class Stack:
    """One `docker-compose up` of docker-compose.yml, under a project name of its own."""

    project: str
    env: dict[str, str]
    url: str  # SCEP, on ingress's published port

    def compose_argv(self, *args: str) -> list[str]:
        return ["docker-compose", *COMPOSE_FILES, "--project-name", self.project, *args]

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return _run(self.compose_argv(*args), env=self.env, timeout=timeout)

    def containers(self, service: str) -> list[str]:
        listed = _run(
            [
                "docker",
                "ps",
                "--all",
                "--filter",
                f"label=com.docker.compose.project={self.project}",
                "--filter",
                f"label=com.docker.compose.service={service}",
                "--format",
                "{{.Names}}",
            ]
        )
        return sorted(listed.stdout.split())

    def inspect(self, container: str, template: str) -> str:
        return _run(["docker", "inspect", "--format", template, container]).stdout.strip()

    def state(self, container: str) -> dict[str, Any]:
        return json.loads(self.inspect(container, "{{json .State}}"))  # type: ignore[no-any-return]

    def ip_address(self, container: str) -> str:
        return self.inspect(container, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")

    def logs(self) -> str:
        """Every container's log, for failure messages."""
        done = subprocess.run(
            self.compose_argv("logs", "--no-color"),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout + done.stderr

    def wait_until_healthy(self, timeout: float) -> None:
        """Every service container healthy (its own /readyz on port 9100), and the
        one-shot init container exited 0; fails early if a container stops."""
        deadline = time.monotonic() + timeout
        containers = [c for service in REPLICAS for c in self.containers(service)]
        while True:
            states = {c: self.state(c) for c in containers}
            health = {c: s.get("Health", {}).get("Status") for c, s in states.items()}
            if set(health.values()) == {"healthy"}:
                break
            stopped = [c for c, s in states.items() if not s["Running"]]
            if stopped or time.monotonic() > deadline:
                pytest.fail(
                    f"not healthy after {timeout:.0f} s (stopped: {stopped}): {health}\n"
                    f"{self.logs()[-6000:]}"
                )
            time.sleep(2)
        (init,) = self.containers("init")
        assert self.state(init)["ExitCode"] == 0


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    _require_docker()
    with _one_compose_test_per_machine():
        _run(["bash", str(HERE / "base-images.sh")], timeout=1200)
        port = free_port()
        replicas = {f"{service.upper()}_REPLICAS": str(n) for service, n in REPLICAS.items()}
        env = {
            **os.environ,
            **replicas,
            "SCEPLINE_STATIC_CHALLENGE": CHALLENGE,
            "INGRESS_PUBLISH": f"127.0.0.1:{port}",
        }
        stack = Stack(
            f"scepline-compose-{secrets.token_hex(4)}", env, f"http://127.0.0.1:{port}/scep"
        )
        # One build serves every service: they all name the same image.
        stack.compose("build", "init", timeout=900)
        try:
            stack.compose("up", "--detach")
            stack.wait_until_healthy(timeout=240)
            yield stack
        finally:
            stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "5")


def _ca_certificate(stack: Stack, tmp_path: Path) -> Path:
    """The CA certificate `scepline ca init` wrote into the shared volume."""
    (ingress,) = stack.containers("ingress")
    ca_pem = tmp_path / "ca.pem"
    ca_pem.write_text(_run(["docker", "exec", ingress, "cat", f"{DATA_DIR}/ca/ca.crt"]).stdout)
    return ca_pem


def _assert_issued(stack: Stack, result: EnrolResult, tmp_path: Path) -> x509.Certificate:
    assert result.ok, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n{stack.logs()[-6000:]}"
    openssl_verify(_ca_certificate(stack, tmp_path), result)
    assert result.certificate is not None
    return result.certificate


def test_compose_refuses_to_start_without_the_enrolment_challenge():
    if not shutil.which("docker-compose"):
        _require_docker()  # skips, or fails under CI, naming what is missing
    env = {k: v for k, v in os.environ.items() if k != "SCEPLINE_STATIC_CHALLENGE"}
    done = subprocess.run(
        ["docker-compose", *COMPOSE_FILES, "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "set SCEPLINE_STATIC_CHALLENGE" in done.stderr


def test_the_services_come_up_healthy_with_their_replicas(stack: Stack):
    assert {service: len(stack.containers(service)) for service in REPLICAS} == REPLICAS
    assert httpx.get(stack.url.replace("/scep", "/readyz"), timeout=10).status_code == 200


def test_a_real_client_enrols_through_the_published_ingress(stack: Stack, tmp_path: Path):
    result = enrol_strongswan(
        stack.url,
        tmp_path / "enrol",
        challenge=CHALLENGE,
        dn="CN=enrolled-through-compose",
        sans=["dns:compose.example.com"],
        poll_interval=1,
        max_poll_time=60,
    )
    certificate = _assert_issued(stack, result, tmp_path)
    assert common_name(certificate) == "enrolled-through-compose"
    assert san_values(certificate) == {"compose.example.com"}

    refused = enrol_strongswan(
        stack.url, tmp_path / "refused", challenge="not-" + CHALLENGE, dn="CN=wrong-challenge"
    )
    assert not refused.ok
    assert "pkiStatus:    FAILURE" in refused.stderr, refused.stderr[-3000:]
    assert "badRequest" in refused.stderr
    assert CHALLENGE not in stack.logs(), "the challenge must never be logged"


def test_the_shared_volume_keeps_the_keys_to_the_service_user(stack: Stack):
    (ingress,) = stack.containers("ingress")
    listing = _run(
        ["docker", "exec", ingress, "find", DATA_DIR, "-mindepth", "1", "-printf", r"%m %u %P\n"]
    ).stdout.splitlines()
    entries = {path: (mode, owner) for mode, owner, path in (e.split() for e in listing)}
    root = _run(["docker", "exec", ingress, "stat", "-c", "%a %U", DATA_DIR]).stdout.split()
    assert root == ["700", "scepline"]
    assert {owner for _mode, owner in entries.values()} == {"scepline"}, listing
    keys = {path: mode for path, (mode, _owner) in entries.items() if path.endswith(".key")}
    assert {"store.key", "ca/ca.key", "ca/ra.key"} <= set(keys), listing
    assert keys == dict.fromkeys(keys, "600")


def _signer_holding_a_request(stack: Stack, signers: dict[str, str], timeout: float) -> str:
    """The signer container whose channel holds an unacknowledged message, as
    RabbitMQ reports it (channel names carry the consumer's address)."""
    (rabbitmq,) = stack.containers("rabbitmq")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        columns = ["name", "messages_unacknowledged", "--formatter", "json"]
        channels = _run(
            ["docker", "exec", rabbitmq, "rabbitmqctl", "--quiet", "list_channels", *columns]
        ).stdout
        for channel in json.loads(channels):
            address = channel["name"].split(":", 1)[0]
            if address in signers and channel["messages_unacknowledged"] > 0:
                return signers[address]
        time.sleep(0.5)
    pytest.fail(f"no signer received the request within {timeout:.0f} s\n{stack.logs()[-6000:]}")


def test_a_request_survives_the_kill_of_the_signer_holding_it(stack: Stack, tmp_path: Path):
    signers = {stack.ip_address(c): c for c in stack.containers("signer")}
    assert len(signers) == 2
    # Both signers frozen: RabbitMQ still hands the sign message to one of them,
    # which cannot act on it. That one is killed; the other is let go.
    _run(["docker", "pause", *signers.values()])
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            enrolment = pool.submit(
                enrol_strongswan,
                stack.url,
                tmp_path / "enrol",
                challenge=CHALLENGE,
                dn="CN=outlived-its-signer",
                poll_interval=1,
                # Under the 60 s after which the sweep would re-queue the request: it
                # is RabbitMQ's redelivery to the other replica that must finish it.
                max_poll_time=45,
                timeout=60,
            )
            holder = _signer_holding_a_request(stack, signers, timeout=60)
            _run(["docker", "kill", holder])
            (survivor,) = (c for c in signers.values() if c != holder)
            _run(["docker", "unpause", survivor])
            result = enrolment.result()
    finally:
        for container in signers.values():
            if stack.state(container).get("Paused"):
                subprocess.run(["docker", "unpause", container], capture_output=True, check=False)

    certificate = _assert_issued(stack, result, tmp_path)
    assert common_name(certificate) == "outlived-its-signer"
    killed = stack.state(holder)
    assert (killed["Running"], killed["ExitCode"]) == (False, 137)  # SIGKILL
    survivor_log = _run(["docker", "logs", survivor])
    signed_by_survivor = [
        int(event["serial"], 16)
        for line in (survivor_log.stdout + survivor_log.stderr).splitlines()
        if line.startswith("{")
        and (event := json.loads(line)).get("event") == "certificate signed"
        and event.get("subject") == "CN=outlived-its-signer"
    ]
    assert signed_by_survivor == [certificate.serial_number]

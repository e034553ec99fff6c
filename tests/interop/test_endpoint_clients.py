"""Real SCEP clients at several endpoints of one running ``scepline up``
configured with the issue's example file (docs/endpoints.md): each endpoint
issues with its own profile; a one-time challenge works once; a manual
request stays PENDING while the client polls, is issued after ``scepline
request approve`` and refused after ``reject``."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.fixtures.processes import scepline_up
from tests.interop.clients import (
    EnrolResult,
    enrol_certmonger,
    enrol_scepclient,
    enrol_strongswan,
)
from tests.interop.test_clients import Server, assert_certmonger_rejected, assert_enrolled
from tests.support.commands import run_scepline
from tests.support.endpoints import ISSUE_EXAMPLE as EXAMPLE

pytestmark = pytest.mark.interop


WIFI = (30, [ExtendedKeyUsageOID.CLIENT_AUTH])
SERVERS = (90, [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])


@dataclass
class Deployment:
    base: str  # http://127.0.0.1:PORT/scep
    data_dir: Path
    env: dict[str, str]  # what the operator's commands run with
    process: object

    def url(self, endpoint: str) -> str:
        return f"{self.base}/{endpoint}"

    def server(self, endpoint: str) -> Server:
        return Server(self.url(endpoint), self.data_dir, self.process)

    def scepline(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_scepline(self.env, *args)

    def challenge(self) -> str:
        done = self.scepline("challenge", "new", "--endpoint", "servers")
        assert done.returncode == 0, done.stderr
        [challenge] = done.stdout.splitlines()
        return challenge


def example_deployment(
    tmp_path_factory: pytest.TempPathFactory, name: str, **settings: str
) -> Iterator[Deployment]:
    base = tmp_path_factory.mktemp(name)
    config = base / "scepline.toml"
    config.write_text(EXAMPLE)
    data_dir = base / "var"
    with scepline_up(data_dir, config=str(config), **settings) as (url, process):
        env = {"SCEPLINE_DATA_DIR": str(data_dir), "SCEPLINE_CONFIG": str(config)}
        yield Deployment(url, data_dir, env, process)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    # Debian's scepclient only speaks single DES; approvals are signed at the
    # next sweep, every second here.
    yield from example_deployment(
        tmp_path_factory, "endpoints", scep_allow_des="true", sweep_interval_seconds="1"
    )


def assert_profile(certificate: x509.Certificate, profile: tuple[int, list[object]]) -> None:
    days, ekus = profile
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime == dt.timedelta(days=days, minutes=5)  # backdated 5 minutes
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == ekus


def test_scepclient_enrols_at_two_endpoints_with_their_profiles(up: Deployment, tmp_path: Path):
    wifi = enrol_scepclient(up.url("wifi"), tmp_path / "w", challenge="wifi-secret", cn="sc-w")
    servers = enrol_scepclient(
        up.url("servers"), tmp_path / "s", challenge=up.challenge(), cn="sc-s"
    )

    assert_profile(assert_enrolled(up.server("wifi"), wifi), WIFI)
    assert_profile(assert_enrolled(up.server("servers"), servers), SERVERS)


def test_strongswan_enrols_at_two_endpoints_with_their_profiles(up: Deployment, tmp_path: Path):
    wifi = enrol_strongswan(up.url("wifi"), tmp_path / "w", challenge="wifi-secret", dn="CN=ss-w")
    servers = enrol_strongswan(
        up.url("servers"),
        tmp_path / "s",
        challenge=up.challenge(),
        dn="CN=ss-s.example.com",
        sans=["dns:ss-s.example.com"],
    )

    assert_profile(assert_enrolled(up.server("wifi"), wifi), WIFI)
    assert_profile(assert_enrolled(up.server("servers"), servers), SERVERS)


def test_certmonger_enrols_at_two_endpoints_with_their_profiles(up: Deployment, tmp_path: Path):
    wifi = enrol_certmonger(
        up.url("wifi"), tmp_path / "w", challenge="wifi-secret", subject="CN=cm-w"
    )
    servers = enrol_certmonger(
        up.url("servers"), tmp_path / "s", challenge=up.challenge(), subject="CN=cm-s"
    )

    assert_profile(assert_enrolled(up.server("wifi"), wifi), WIFI)
    assert_profile(assert_enrolled(up.server("servers"), servers), SERVERS)


def test_a_one_time_challenge_works_once(up: Deployment, tmp_path: Path):
    challenge = up.challenge()

    first = enrol_strongswan(up.url("servers"), tmp_path / "a", challenge=challenge, dn="CN=once")
    second = enrol_strongswan(up.url("servers"), tmp_path / "b", challenge=challenge, dn="CN=twice")
    certmonger = enrol_certmonger(
        up.url("servers"), tmp_path / "c", challenge=challenge, subject="CN=thrice"
    )

    assert_enrolled(up.server("servers"), first)
    assert not second.ok
    assert "pkiStatus:    FAILURE" in second.stderr and "badRequest" in second.stderr
    assert_certmonger_rejected(certmonger)
    listed = up.scepline("request", "list", "--state", "REJECTED", "--endpoint", "servers")
    refused = [line for line in listed.stdout.splitlines() if "CN=twice" in line]
    [transaction_id] = [line.split()[2] for line in refused]
    shown = up.scepline("request", "show", transaction_id)
    assert "challenge already used" in shown.stdout


def waiting_line(up: Deployment, subject: str, timeout: float = 30) -> str:
    """The line of `request list --state AWAITING_APPROVAL` naming ``subject``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = up.scepline("request", "list", "--state", "AWAITING_APPROVAL")
        assert listed.returncode == 0, listed.stderr
        for line in listed.stdout.splitlines():
            if subject in line:
                return line
        time.sleep(0.5)
    raise AssertionError(f"no request of {subject} awaits approval")


def in_background(enrol: Callable[[], EnrolResult]) -> concurrent.futures.Future[EnrolResult]:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(enrol)
    pool.shutdown(wait=False)
    return future


def test_strongswan_polls_a_manual_request_until_an_operator_approves_it(
    up: Deployment, tmp_path: Path
):
    client = in_background(
        lambda: enrol_strongswan(
            up.url("gear"),
            tmp_path,
            challenge="",
            dn="CN=camera-1",
            poll_interval=1,
            max_poll_time=90,
            timeout=120,
        )
    )
    line = waiting_line(up, "CN=camera-1")
    time.sleep(3)  # the client keeps polling, and hears PENDING
    assert not client.done()
    assert up.scepline("request", "show", line.split()[2]).stdout.count("AWAITING_APPROVAL") >= 1

    approved = up.scepline("request", "approve", line.split()[2], "--by", "alice")
    result = client.result(timeout=120)

    assert approved.returncode == 0, approved.stderr
    certificate = assert_enrolled(up.server("gear"), result)
    assert certificate.subject.rfc4514_string() == "CN=camera-1"
    assert "PENDING" in result.stdout + result.stderr or "pending" in result.stdout + result.stderr
    shown = up.scepline("request", "show", line.split()[2])
    assert "approved by alice" in shown.stdout and "ISSUED" in shown.stdout


def test_certmonger_polls_a_manual_request_until_an_operator_rejects_it(
    up: Deployment, tmp_path: Path
):
    client = in_background(
        lambda: enrol_certmonger(
            up.url("gear"), tmp_path, challenge="", subject="CN=camera-2", timeout=120
        )
    )
    line = waiting_line(up, "CN=camera-2")
    time.sleep(3)
    assert not client.done()

    rejected = up.scepline("request", "reject", line.split()[2], "--reason", "not ours")
    result = client.result(timeout=120)

    assert rejected.returncode == 0, rejected.stderr
    assert_certmonger_rejected(result)


def test_certmonger_polls_a_manual_request_until_it_is_approved_by_its_client_id(
    up: Deployment, tmp_path: Path
):
    """The operator may name the client's own transactionID (the one in its logs)."""
    client = in_background(
        lambda: enrol_certmonger(
            up.url("gear"), tmp_path, challenge="", subject="CN=camera-3", timeout=120
        )
    )
    store_key = waiting_line(up, "CN=camera-3").split()[2]
    client_id = store_key.removesuffix("|at:gear")

    approved = up.scepline("request", "approve", client_id)
    result = client.result(timeout=120)

    assert approved.returncode == 0, approved.stderr
    assert_enrolled(up.server("gear"), result)
    assert result.certmonger_status == "MONITORING"


TWO_CAS = (
    EXAMPLE.replace(
        '[endpoints.servers]\nchallenge = "one-time"\n',
        '[endpoints.servers]\nchallenge = "one-time"\nca = "corp"\n',
    )
    + """
[cas.corp]
common_name = "Corp Servers CA"
key_type = "ec"
"""
)


@pytest.fixture(scope="module")
def two_cas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    base = tmp_path_factory.mktemp("two-cas")
    config = base / "scepline.toml"
    config.write_text(TWO_CAS)
    data_dir = base / "var"
    with scepline_up(data_dir, config=str(config)) as (url, process):
        env = {"SCEPLINE_DATA_DIR": str(data_dir), "SCEPLINE_CONFIG": str(config)}
        yield Deployment(url, data_dir, env, process)


def test_clients_get_certificates_of_each_endpoints_ca(two_cas: Deployment, tmp_path: Path):
    corp = Server(two_cas.url("servers"), two_cas.data_dir / "cas" / "corp", two_cas.process)
    default = two_cas.server("wifi")

    strongswan = enrol_strongswan(
        two_cas.url("servers"), tmp_path / "s", challenge=two_cas.challenge(), dn="CN=corp-ss"
    )
    certmonger = enrol_certmonger(
        two_cas.url("servers"), tmp_path / "c", challenge=two_cas.challenge(), subject="CN=corp-cm"
    )
    wifi = enrol_certmonger(
        two_cas.url("wifi"), tmp_path / "w", challenge="wifi-secret", subject="CN=default-cm"
    )

    for result in (strongswan, certmonger):
        certificate = assert_enrolled(corp, result)  # openssl verify against corp's CA
        assert certificate.issuer.rfc4514_string() == "CN=Corp Servers CA"
        assert_profile(certificate, SERVERS)
    assert assert_enrolled(default, wifi).issuer.rfc4514_string() == "CN=scepline lab CA"
    shown = two_cas.scepline("ca", "show")
    assert "CA default:" in shown.stdout and "CA corp:" in shown.stdout

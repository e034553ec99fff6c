"""Crash tests: separately started service processes on RabbitMQ and PostgreSQL.

A burst of enrolments runs while a validator, a signer and a notifier are
killed with SIGKILL (and restarted), and while RabbitMQ itself restarts.
Afterwards every request must end ISSUED or FAILED, with exactly one
certificate per issued transaction, and none stuck.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from scepline_devtools.scep_client import (
    Requester,
    ScepClient,
    ScepHttpError,
    build_csr,
    self_signed_requester,
)
from scepline_shared.scep import MessageType, PkiStatus, issuer_and_subject
from tests.fixtures.postgres import fresh_postgres_database
from tests.fixtures.processes import ProcessGroup, ScepProcess, free_port, wait_until_ready
from tests.fixtures.rabbitmq import delete_namespace
from tests.fixtures.scepline import CHALLENGE
from tests.support.commands import run_scepline
from tests.support.pki import name, rsa_key

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

WORKERS = ("validator", "signer", "notifier")


@dataclass
class Cluster:
    url: str
    database_url: str
    group: ProcessGroup
    workers: dict[str, ScepProcess]
    env: dict[str, str]

    @property
    def dsn(self) -> str:
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://")

    def restart(self, service: str) -> None:
        self.workers[service] = self.group.start(f"{service}-{time.monotonic_ns()}", service)

    def kill(self, service: str) -> None:
        self.workers[service].kill()


@pytest.fixture
async def cluster(
    tmp_path: Path, lab_ca_dir: Path, rabbitmq_url: str, postgres_admin_dsn: str
) -> AsyncIterator[Cluster]:
    data_dir = tmp_path / "var"
    shutil.copytree(lab_ca_dir, data_dir / "ca")
    namespace = f"crash-{uuid.uuid4().hex[:10]}"
    port = free_port()
    async with fresh_postgres_database(postgres_admin_dsn) as database_url:
        env = {
            "SCEPLINE_DATA_DIR": str(data_dir),
            "SCEPLINE_DATABASE_URL": database_url,
            "SCEPLINE_BROKER_URL": rabbitmq_url,
            "SCEPLINE_BROKER_NAMESPACE": namespace,
            "SCEPLINE_STATIC_CHALLENGE": CHALLENGE,
            "SCEPLINE_HTTP_PORT": str(port),
            "SCEPLINE_SYNC_WAIT_SECONDS": "2",
            "SCEPLINE_RETRY_BASE_DELAY_SECONDS": "0.2",
            "SCEPLINE_SWEEP_STALE_AFTER_SECONDS": "4",
            "SCEPLINE_SWEEP_INTERVAL_SECONDS": "1",
            "SCEPLINE_CRL_CHECK_INTERVAL_SECONDS": "1",
            "SCEPLINE_LOG_LEVEL": "INFO",
        }
        group = ProcessGroup(env, tmp_path)
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "scepline", "db", "upgrade"],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
        ingress = group.start("ingress", "ingress", port=port)
        workers = {service: group.start(service, service) for service in WORKERS}
        try:
            await asyncio.to_thread(wait_until_ready, f"http://127.0.0.1:{port}/readyz", ingress)
            yield Cluster(f"http://127.0.0.1:{port}/scep", database_url, group, workers, env)
        finally:
            group.stop_all()
            await delete_namespace(rabbitmq_url, namespace)


@dataclass
class EmbeddedProcess:
    """``scepline up`` as a process (in-process broker, SQLite), restartable."""

    url: str
    database: Path
    group: ProcessGroup
    process: ScepProcess
    env: dict[str, str]
    port: int

    def kill(self) -> None:
        self.process.kill_all()

    def restart(self) -> None:
        self.process = self.group.start(
            f"up-{time.monotonic_ns()}", "up", port=self.port, health_port=free_port()
        )
        wait_until_ready(f"http://127.0.0.1:{self.port}/readyz", self.process)

    def claimed_serials(self) -> set[str]:
        """Serials of the signing claims standing now (read beside the writer: WAL)."""
        with contextlib.closing(sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT cert_serial FROM scep_request WHERE state = 'SIGNING'")
            return {row[0] for row in rows}


@pytest.fixture
async def embedded_process(tmp_path: Path, lab_ca_dir: Path) -> AsyncIterator[EmbeddedProcess]:
    data_dir = tmp_path / "var"
    shutil.copytree(lab_ca_dir, data_dir / "ca")
    port = free_port()
    env = {
        "SCEPLINE_DATA_DIR": str(data_dir),
        "SCEPLINE_STATIC_CHALLENGE": CHALLENGE,
        "SCEPLINE_HTTP_PORT": str(port),
        "SCEPLINE_SYNC_WAIT_SECONDS": "2",
        "SCEPLINE_SWEEP_STALE_AFTER_SECONDS": "4",
        "SCEPLINE_SWEEP_INTERVAL_SECONDS": "1",
        "SCEPLINE_CRL_CHECK_INTERVAL_SECONDS": "1",
        "SCEPLINE_WORKERS": "2",
    }
    group = ProcessGroup(env, tmp_path)
    process = group.start("up", "up", port=port, health_port=free_port())
    try:
        await asyncio.to_thread(wait_until_ready, f"http://127.0.0.1:{port}/readyz", process)
        yield EmbeddedProcess(
            f"http://127.0.0.1:{port}/scep", data_dir / "scepline.db", group, process, env, port
        )
    finally:
        group.stop_all()


@dataclass
class Device:
    label: str
    requester: Requester
    transaction_id: str


async def enrol_until_answered(client: ScepClient, device: Device) -> PkiStatus:
    """What a device does: send the PKCSReq (again on HTTP errors), poll while PENDING."""
    csr = build_csr(device.requester.key, name(device.label), challenge=CHALLENGE)
    deadline = time.monotonic() + 120
    status: PkiStatus | None = None
    while status is None and time.monotonic() < deadline:
        try:
            status = (
                await client.enrol(csr, device.requester, transaction_id=device.transaction_id)
            ).status
        except (ScepHttpError, httpx.HTTPError):
            await asyncio.sleep(0.5)
    while status is PkiStatus.PENDING and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        try:
            rep = await client.exchange(
                MessageType.CERT_POLL,
                issuer_and_subject(client._issuing_ca().subject, name(device.label)),
                device.requester,
                transaction_id=device.transaction_id,
            )
            status = rep.status
        except (ScepHttpError, httpx.HTTPError):
            continue
    assert status is not None, f"{device.transaction_id}: no answer"
    return status


async def burst_with(
    cluster: Cluster | EmbeddedProcess, count: int, chaos: Callable[[], object]
) -> list[PkiStatus]:
    devices = [
        Device(f"crash-{i}", self_signed_requester(rsa_key(f"crash-{i % 16}")), f"tx-crash-{i}")
        for i in range(count)
    ]
    async with httpx.AsyncClient(timeout=60) as http:
        client = ScepClient(cluster.url, http=http)
        await client.get_ca_certs()
        enrolments = asyncio.gather(*(enrol_until_answered(client, d) for d in devices))
        await asyncio.to_thread(chaos)
        return await enrolments


async def assert_every_request_settled_once(cluster: Cluster, count: int) -> None:
    connection = await asyncpg.connect(cluster.dsn)
    try:
        states = dict(await connection.fetch("SELECT state, count(*) FROM scep_request GROUP BY 1"))
        # Voided serials (claimed, never stored: der NULL) are not certificates.
        per_transaction = await connection.fetch(
            "SELECT transaction_id, count(*) AS n FROM certificate WHERE der IS NOT NULL GROUP BY 1"
        )
        issued = await connection.fetchval(
            "SELECT count(*) FROM scep_request WHERE state = 'ISSUED' AND cert_serial IS NOT NULL"
        )
    finally:
        await connection.close()
    assert sum(states.values()) == count
    assert set(states) <= {"ISSUED", "FAILED"}, f"unsettled requests: {states}"
    assert all(row["n"] == 1 for row in per_transaction), "a transaction got two certificates"
    assert len(per_transaction) == issued == states.get("ISSUED", 0)


async def test_killing_each_worker_mid_burst_loses_and_duplicates_nothing(cluster: Cluster):
    def chaos() -> None:
        for service in WORKERS:
            time.sleep(1.0)
            cluster.kill(service)
            time.sleep(0.5)
            cluster.restart(service)

    statuses = await burst_with(cluster, 60, chaos)
    assert all(status is PkiStatus.SUCCESS for status in statuses), statuses
    await assert_every_request_settled_once(cluster, 60)


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl")
async def test_a_broker_restart_mid_burst_loses_and_duplicates_nothing(cluster: Cluster):
    def chaos() -> None:
        time.sleep(1.5)
        subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True)
        time.sleep(2)
        subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True)
        subprocess.run(
            ["rabbitmqctl", "await_startup"], check=True, capture_output=True, timeout=60
        )

    statuses = await burst_with(cluster, 60, chaos)
    assert all(status is PkiStatus.SUCCESS for status in statuses), statuses
    await assert_every_request_settled_once(cluster, 60)


def _claimed_serials(dsn: str) -> set[str]:
    """Serials of the signing claims standing now (requests in SIGNING)."""

    async def fetch() -> set[str]:
        connection = await asyncpg.connect(dsn)
        try:
            rows = await connection.fetch(
                "SELECT cert_serial FROM scep_request WHERE state = 'SIGNING'"
            )
        finally:
            await connection.close()
        return {row["cert_serial"] for row in rows}

    return asyncio.run(fetch())


async def test_killing_the_signer_mid_signature_leaves_no_signature_unaccounted(
    cluster: Cluster,
):
    """kill -9 of the signer while it holds signing claims, again and again, under a
    backlog: every claim it left is voided (revoked, on the next CRL) and the
    request signed again, and the issuance journal reconciles: journal entries =
    recorded certificates + voided serials."""
    abandoned: set[str] = set()

    def chaos() -> None:
        cluster.kill("signer")  # a backlog builds up behind a dead signer
        time.sleep(3)
        for kills in range(1, 21):
            cluster.restart("signer")
            deadline = time.monotonic() + 30
            # Kill it while it holds claims of its own (not only ones left before).
            while not _claimed_serials(cluster.dsn) - abandoned and time.monotonic() < deadline:
                time.sleep(0.002)
            cluster.kill("signer")
            abandoned.update(_claimed_serials(cluster.dsn))  # it is gone: they are abandoned
            if kills >= 4 and len(abandoned) >= 3:
                break
        cluster.restart("signer")

    statuses = await burst_with(cluster, 150, chaos)

    assert all(status is PkiStatus.SUCCESS for status in statuses), statuses
    await assert_every_request_settled_once(cluster, 150)
    assert abandoned, "no kill landed while the signer held a claim"
    connection = await asyncpg.connect(cluster.dsn)
    try:
        journaled = await connection.fetchval(
            "SELECT count(*) FROM issuance_journal WHERE kind = 'certificate'"
        )
        recorded = await connection.fetchval(
            "SELECT count(*) FROM certificate WHERE der IS NOT NULL"
        )
        voided = await connection.fetch(
            "SELECT serial, revocation_reason FROM certificate WHERE der IS NULL"
        )
        why = await connection.fetchval(
            "SELECT count(*) FROM request_event WHERE detail LIKE '%signing claim abandoned%'"
        )
    finally:
        await connection.close()
    print(f"journal {journaled} = {recorded} recorded + {len(voided)} voided")
    assert journaled == recorded + len(voided)
    assert {row["serial"] for row in voided} == abandoned
    assert why == len(abandoned)
    assert {row["revocation_reason"] for row in voided} == {4}  # superseded

    checked = await asyncio.to_thread(run_scepline, cluster.env, "ca", "journal", "--check")
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-2000:]
    assert "# journal reconciles" in checked.stdout
    assert f"# {len(voided)} certificate voided" in checked.stdout
    # Restarted signers found the OCSP responder certificate made: still one.
    assert "# 1 ocsp-certificate in-use" in checked.stdout

    voided_serials = {int(row["serial"], 16) for row in voided}
    await _eventually_on_the_crl(cluster, voided_serials)


async def _eventually_on_the_crl(cluster: Cluster | EmbeddedProcess, serials: set[int]) -> None:
    from cryptography import x509

    deadline = time.monotonic() + 30
    listed: set[int] = set()
    while time.monotonic() < deadline:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(cluster.url.removesuffix("/scep") + "/crl")
        if response.status_code == 200:
            crl = x509.load_der_x509_crl(response.content)
            listed = {entry.serial_number for entry in crl}
            if serials <= listed:
                return
        await asyncio.sleep(0.5)
    raise AssertionError(f"voided serials missing from the CRL: {serials - listed}")


async def test_killing_scepline_up_mid_signature_leaves_no_signature_unaccounted(
    embedded_process: EmbeddedProcess,
):
    """The same on the embedded deployment: kill -9 of the whole process while it
    holds signing claims; restarted, it voids them and signs again."""
    up = embedded_process
    abandoned: set[str] = set()

    def chaos() -> None:
        for kills in range(1, 21):
            deadline = time.monotonic() + 30
            while not up.claimed_serials() - abandoned and time.monotonic() < deadline:
                time.sleep(0.001)
            up.kill()
            abandoned.update(up.claimed_serials())
            up.restart()
            if kills >= 2 and abandoned:
                break

    statuses = await burst_with(up, 120, chaos)

    assert all(status is PkiStatus.SUCCESS for status in statuses), statuses
    assert abandoned, "no kill landed while scepline up held a claim"
    with contextlib.closing(sqlite3.connect(f"file:{up.database}?mode=ro", uri=True)) as db:
        states = dict(db.execute("SELECT state, count(*) FROM scep_request GROUP BY 1").fetchall())
        per_transaction = db.execute(
            "SELECT count(*) FROM certificate WHERE der IS NOT NULL GROUP BY transaction_id"
        ).fetchall()
        voided = {row[0] for row in db.execute("SELECT serial FROM certificate WHERE der IS NULL")}
        journaled = db.execute(
            "SELECT count(*) FROM issuance_journal WHERE kind = 'certificate'"
        ).fetchone()[0]
    assert states == {"ISSUED": 120}
    assert all(n == 1 for (n,) in per_transaction) and len(per_transaction) == 120
    print(f"journal {journaled} = 120 recorded + {len(voided)} voided")
    assert voided == abandoned
    assert journaled == 120 + len(voided)
    checked = await asyncio.to_thread(run_scepline, up.env, "ca", "journal", "--check")
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-2000:]
    assert "# 1 ocsp-certificate in-use" in checked.stdout
    await _eventually_on_the_crl(up, {int(serial, 16) for serial in voided})


async def test_killing_one_serving_process_of_scepline_up_loses_nothing(
    embedded_process: EmbeddedProcess,
):
    """`scepline up` on every core: each serving process is the whole product on the
    shared socket and store. kill -9 of one of them mid-burst: the supervisor starts
    another, and every device gets its certificate, once."""
    up = embedded_process
    first = up.process.children()
    assert len(first) == 2  # SCEPLINE_WORKERS=2

    def chaos() -> None:
        time.sleep(1.0)
        os.kill(first[0], signal.SIGKILL)

    statuses = await burst_with(up, 60, chaos)

    assert all(status is PkiStatus.SUCCESS for status in statuses), statuses
    now = await asyncio.to_thread(_children_when, up, 2)
    assert len(now) == 2 and first[0] not in now and first[1] in now
    with contextlib.closing(sqlite3.connect(f"file:{up.database}?mode=ro", uri=True)) as db:
        states = dict(db.execute("SELECT state, count(*) FROM scep_request GROUP BY 1").fetchall())
        issued_twice = db.execute(
            "SELECT count(*) FROM (SELECT transaction_id FROM certificate WHERE der IS NOT NULL "
            "GROUP BY transaction_id HAVING count(*) > 1)"
        ).fetchone()[0]
    assert states == {"ISSUED": 60}
    assert issued_twice == 0


def _children_when(up: EmbeddedProcess, count: int, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(children := up.process.children()) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    return children

"""Crash tests: separately started service processes on RabbitMQ and PostgreSQL.

A burst of enrolments runs while a validator, a signer and a notifier are
killed with SIGKILL (and restarted), and while RabbitMQ itself restarts.
Afterwards every request must end ISSUED or FAILED, with exactly one
certificate per issued transaction, and none stuck.
"""

from __future__ import annotations

import asyncio
import os
import shutil
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

from scepline_shared.scep import MessageType, PkiStatus, issuer_and_subject
from scepline_shared.scep_client import (
    Requester,
    ScepClient,
    ScepHttpError,
    build_csr,
    self_signed_requester,
)
from tests.fixtures.postgres import fresh_postgres_database
from tests.fixtures.processes import ProcessGroup, ScepProcess, free_port, wait_until_ready
from tests.fixtures.rabbitmq import delete_namespace
from tests.fixtures.scepline import CHALLENGE
from tests.support.pki import name, rsa_key

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

WORKERS = ("validator", "signer", "notifier")


@dataclass
class Cluster:
    url: str
    database_url: str
    group: ProcessGroup
    workers: dict[str, ScepProcess]

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
            yield Cluster(f"http://127.0.0.1:{port}/scep", database_url, group, workers)
        finally:
            group.stop_all()
            await delete_namespace(rabbitmq_url, namespace)


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


async def burst_with(cluster: Cluster, count: int, chaos: Callable[[], object]) -> list[PkiStatus]:
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
    dsn = cluster.database_url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(dsn)
    try:
        states = dict(await connection.fetch("SELECT state, count(*) FROM scep_request GROUP BY 1"))
        per_transaction = await connection.fetch(
            "SELECT transaction_id, count(*) AS n FROM certificate GROUP BY 1"
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

"""Real SCEP clients enrol through separately started service processes:
two ingress replicas, a validator, a signer and a notifier on RabbitMQ and
PostgreSQL. One ingress answers at once (PENDING) so the client must poll."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from tests.fixtures.processes import ProcessGroup, free_port, wait_until_ready
from tests.fixtures.rabbitmq import delete_namespace
from tests.interop.clients import enrol_certmonger, enrol_scepclient, enrol_strongswan
from tests.interop.test_clients import CHALLENGE, Server, assert_enrolled, common_name, san_values
from tests.support.loops import run_in_fresh_loop

pytestmark = [pytest.mark.interop, pytest.mark.postgres, pytest.mark.rabbitmq]


@dataclass
class Cluster:
    pending: Server  # ingress with SCEPLINE_SYNC_WAIT_SECONDS=0: always PENDING first
    waiting: Server  # ingress that waits for the outcome


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, rabbitmq_url: str, postgres_admin_dsn: str
) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("distributed")
    data_dir = base / "var"
    namespace = f"interop-{uuid.uuid4().hex[:10]}"
    database = f"scepline_interop_{uuid.uuid4().hex[:10]}"
    run_in_fresh_loop(_admin(postgres_admin_dsn, f'CREATE DATABASE "{database}"'))
    env = {
        "SCEPLINE_DATA_DIR": str(data_dir),
        "SCEPLINE_DATABASE_URL": postgres_admin_dsn.rsplit("/", 1)[0] + f"/{database}",
        "SCEPLINE_BROKER_URL": rabbitmq_url,
        "SCEPLINE_BROKER_NAMESPACE": namespace,
        "SCEPLINE_STATIC_CHALLENGE": CHALLENGE,
        "SCEPLINE_SCEP_ALLOW_DES": "true",
    }
    group = ProcessGroup(env, base)
    try:
        for step in (["ca", "init"], ["db", "upgrade"]):
            done = subprocess.run(
                [sys.executable, "-m", "scepline", *step],
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                check=False,
            )
            assert done.returncode == 0, f"scepline {' '.join(step)}: {done.stderr[-2000:]}"
        ports = {"pending": free_port(), "waiting": free_port()}
        ingress = {
            name: group.start(
                f"ingress-{name}",
                "ingress",
                env={
                    "SCEPLINE_HTTP_PORT": str(port),
                    "SCEPLINE_SYNC_WAIT_SECONDS": "0" if name == "pending" else "20",
                },
                port=port,
            )
            for name, port in ports.items()
        }
        for service in ("validator", "signer", "notifier"):
            group.start(service, service)
        for name, process in ingress.items():
            wait_until_ready(f"http://127.0.0.1:{ports[name]}/readyz", process)
        yield Cluster(
            pending=Server(
                f"http://127.0.0.1:{ports['pending']}/scep", data_dir, ingress["pending"]
            ),
            waiting=Server(
                f"http://127.0.0.1:{ports['waiting']}/scep", data_dir, ingress["waiting"]
            ),
        )
    finally:
        group.stop_all()
        run_in_fresh_loop(delete_namespace(rabbitmq_url, namespace))
        run_in_fresh_loop(
            _admin(postgres_admin_dsn, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        )


def test_strongswan_polls_a_pending_request_until_it_is_issued(cluster: Cluster, tmp_path: Path):
    result = enrol_strongswan(
        cluster.pending.url,
        tmp_path,
        challenge=CHALLENGE,
        dn="CN=polled-by-strongswan",
        sans=["dns:polled.example.com"],
        poll_interval=1,
        max_poll_time=60,
    )
    certificate = assert_enrolled(cluster.pending, result)
    assert common_name(certificate) == "polled-by-strongswan"
    assert san_values(certificate) == {"polled.example.com"}
    assert "PENDING" in result.stdout + result.stderr or "pending" in result.stdout + result.stderr


def test_certmonger_enrols_through_another_ingress_replica(cluster: Cluster, tmp_path: Path):
    result = enrol_certmonger(
        cluster.waiting.url,
        tmp_path,
        challenge=CHALLENGE,
        subject="CN=certmonger-distributed",
        sans=["dns:cm.example.com"],
    )
    certificate = assert_enrolled(cluster.waiting, result)
    assert common_name(certificate) == "certmonger-distributed"


def test_micromdm_scepclient_enrols_through_the_pipeline(cluster: Cluster, tmp_path: Path):
    result = enrol_scepclient(cluster.waiting.url, tmp_path, challenge=CHALLENGE, cn="sc-dist")
    certificate = assert_enrolled(cluster.waiting, result)
    assert common_name(certificate) == "sc-dist"


async def _admin(dsn: str, statement: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()

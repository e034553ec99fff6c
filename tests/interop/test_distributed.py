"""Real SCEP clients enrol through separately started service processes:
two ingress replicas, a validator, a signer and a notifier on RabbitMQ and
PostgreSQL. One ingress answers at once (PENDING) so the client must poll."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.processes import scepline_cluster
from tests.interop.clients import enrol_certmonger, enrol_scepclient, enrol_strongswan
from tests.interop.test_clients import (
    CHALLENGE,
    Server,
    assert_certmonger_rejected,
    assert_enrolled,
    common_name,
    polled_pending,
    san_values,
)

pytestmark = [pytest.mark.interop, pytest.mark.postgres, pytest.mark.rabbitmq]


@dataclass
class Cluster:
    pending: Server  # ingress with SCEPLINE_SYNC_WAIT_SECONDS=0: always PENDING first
    waiting: Server  # ingress that waits for the outcome


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, rabbitmq_url: str, postgres_admin_dsn: str
) -> Iterator[Cluster]:
    with scepline_cluster(
        tmp_path_factory.mktemp("distributed"),
        rabbitmq_url=rabbitmq_url,
        postgres_admin_dsn=postgres_admin_dsn,
        settings={"static_challenge": CHALLENGE, "scep_allow_des": "true"},
        ingress_sync_wait={"pending": "0", "waiting": "20"},
    ) as info:
        yield Cluster(
            pending=Server(info.urls["pending"], info.data_dir, info.ingress["pending"]),
            waiting=Server(info.urls["waiting"], info.data_dir, info.ingress["waiting"]),
        )


@pytest.mark.parametrize("rsa_padding", ["pkcs1", "pss"])
def test_strongswan_polls_a_pending_request_until_it_is_issued(
    cluster: Cluster, tmp_path: Path, rsa_padding: str
):
    result = enrol_strongswan(
        cluster.pending.url,
        tmp_path,
        challenge=CHALLENGE,
        dn="CN=polled-by-strongswan",
        sans=["dns:polled.example.com"],
        poll_interval=1,
        max_poll_time=60,
        rsa_padding=rsa_padding,
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


def test_certmonger_polls_a_pending_request_until_it_is_issued(cluster: Cluster, tmp_path: Path):
    before = cluster.pending.pki_operations()
    result = enrol_certmonger(
        cluster.pending.url,
        tmp_path,
        challenge=CHALLENGE,
        subject="CN=certmonger-polled",
        sans=["dns:cm-polled.example.com"],
    )
    certificate = assert_enrolled(cluster.pending, result)
    assert san_values(certificate) == {"cm-polled.example.com"}
    assert result.certmonger_status == "MONITORING"
    polled_pending(cluster.pending, before, "SUCCESS")


def test_certmonger_polls_a_pending_request_until_it_is_rejected(cluster: Cluster, tmp_path: Path):
    before = cluster.pending.pki_operations()
    result = enrol_certmonger(
        cluster.pending.url, tmp_path, challenge="wrong", subject="CN=certmonger-refused"
    )
    assert_certmonger_rejected(result)
    polled_pending(cluster.pending, before, "FAILURE_badRequest")

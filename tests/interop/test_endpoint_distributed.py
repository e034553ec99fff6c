"""Real SCEP clients at several endpoints of separately started services on
RabbitMQ and PostgreSQL (docs/endpoints.md): a static and a one-time endpoint
issue with their profiles (the one-time one under a CA of its own), a
one-time challenge works once, and a manual request is issued after
`scepline request approve`, which hands it to the signers through RabbitMQ."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.processes import scepline_cluster
from tests.interop.clients import enrol_certmonger, enrol_scepclient, enrol_strongswan
from tests.interop.test_clients import Server, assert_certmonger_rejected, assert_enrolled
from tests.interop.test_endpoint_clients import (
    SERVERS,
    TWO_CAS,
    WIFI,
    Deployment,
    assert_profile,
    in_background,
    waiting_line,
)

pytestmark = [pytest.mark.interop, pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, rabbitmq_url: str, postgres_admin_dsn: str
) -> Iterator[Deployment]:
    base = tmp_path_factory.mktemp("endpoints-distributed")
    config = base / "scepline.toml"
    config.write_text(TWO_CAS)  # servers has a CA of its own: `ca init` makes both
    with scepline_cluster(
        base,
        rabbitmq_url=rabbitmq_url,
        postgres_admin_dsn=postgres_admin_dsn,
        # The sweep runs every minute: the approval reaches the signers by RabbitMQ.
        settings={"config": str(config), "scep_allow_des": "true"},
        ingress_sync_wait={"waiting": "20"},
    ) as info:
        yield Deployment(
            info.urls["waiting"], info.data_dir, dict(info.env), info.ingress["waiting"]
        )


def test_static_and_one_time_endpoints_issue_with_their_profiles(
    cluster: Deployment, tmp_path: Path
):
    wifi = enrol_scepclient(cluster.url("wifi"), tmp_path / "w", challenge="wifi-secret", cn="d-w")
    challenge = cluster.challenge()
    servers = enrol_strongswan(
        cluster.url("servers"), tmp_path / "s", challenge=challenge, dn="CN=d-s"
    )
    again = enrol_certmonger(
        cluster.url("servers"), tmp_path / "again", challenge=challenge, subject="CN=d-again"
    )

    assert_profile(assert_enrolled(cluster.server("wifi"), wifi), WIFI)
    corp = Server(cluster.url("servers"), cluster.data_dir / "cas" / "corp", cluster.process)
    assert_profile(assert_enrolled(corp, servers), SERVERS)
    assert not again.ok and again.certmonger_status == "CA_REJECTED"


def test_a_manual_request_is_issued_after_approval(cluster: Deployment, tmp_path: Path):
    client = in_background(
        lambda: enrol_strongswan(
            cluster.url("gear"),
            tmp_path,
            challenge="",
            dn="CN=d-camera",
            poll_interval=1,
            max_poll_time=90,
            timeout=120,
        )
    )
    transaction_id = waiting_line(cluster, "CN=d-camera").split()[2]

    approved = cluster.scepline("request", "approve", transaction_id)
    result = client.result(timeout=120)

    assert approved.returncode == 0, approved.stderr
    assert "handed to the signers" in approved.stdout
    assert_enrolled(Server(cluster.url("gear"), cluster.data_dir, cluster.process), result)


def test_a_rejected_manual_request_is_refused_when_certmonger_polls(
    cluster: Deployment, tmp_path: Path
):
    client = in_background(
        lambda: enrol_certmonger(
            cluster.url("gear"), tmp_path, challenge="", subject="CN=d-rejected", timeout=120
        )
    )
    transaction_id = waiting_line(cluster, "CN=d-rejected").split()[2]

    rejected = cluster.scepline("request", "reject", transaction_id, "--reason", "not ours")

    assert rejected.returncode == 0, rejected.stderr
    assert_certmonger_rejected(client.result(timeout=120))

"""The public SCEP port serves SCEP, CRLs and the load balancer's ``/healthz``
and ``/readyz``, nothing meant for operators: metrics are on each process's
health port (SCEPLINE_HEALTH_PORT), and no API document is served anywhere."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from scepline.runtime import UP_HEALTH_PORT, up_health_port
from scepline_shared.settings import Settings
from tests.fixtures.processes import ScepProcess, scepline_cluster, scepline_up
from tests.fixtures.scepline import data_dir_with_ca

OPERATOR_PATHS = ["/metrics", "/openapi.json", "/docs", "/redoc"]
CACAPS_COUNTER = 'scepline_scep_requests_total{message_type="",operation="GetCACaps",outcome="ok"}'


def base_of(scep_url: str) -> str:
    return scep_url.removesuffix("/scep")


def assert_scep_port_serves_no_operator_surface(scep_url: str) -> None:
    base = base_of(scep_url)
    for path in OPERATOR_PATHS:
        assert httpx.get(base + path).status_code == 404, path
    # What load balancers probe stays.
    assert httpx.get(base + "/healthz").status_code == 200
    assert httpx.get(base + "/readyz").status_code == 200


def assert_health_port_serves_metrics(process: ScepProcess, *counters: str) -> None:
    metrics = httpx.get(process.metrics_url)
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    for counter in counters:
        assert counter in metrics.text
    health = process.metrics_url.removesuffix("/metrics")
    assert httpx.get(health + "/healthz").status_code == 200
    assert httpx.get(health + "/readyz").status_code == 200
    for path in ["/openapi.json", "/docs", "/redoc"]:
        assert httpx.get(health + path).status_code == 404, path


def test_scepline_up_serves_metrics_on_its_health_port_only(tmp_path: Path, lab_ca_dir: Path):
    with scepline_up(data_dir_with_ca(tmp_path, lab_ca_dir), static_challenge="unused") as (
        url,
        process,
    ):
        assert httpx.get(url, params={"operation": "GetCACaps"}).status_code == 200

        assert_scep_port_serves_no_operator_surface(url)
        assert_health_port_serves_metrics(process, CACAPS_COUNTER)


def test_scepline_up_serves_its_health_port_on_9100_unless_told_otherwise():
    assert UP_HEALTH_PORT == 9100
    assert up_health_port(Settings()) == 9100
    assert up_health_port(Settings(health_port=9200)) == 9200
    assert Settings().health_host == "127.0.0.1"


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_separate_services_serve_metrics_on_their_health_ports_only(
    tmp_path: Path, rabbitmq_url: str, postgres_admin_dsn: str
):
    with scepline_cluster(
        tmp_path,
        rabbitmq_url=rabbitmq_url,
        postgres_admin_dsn=postgres_admin_dsn,
        settings={"static_challenge": "unused"},
        ingress_sync_wait={"ingress": "1"},
    ) as cluster:
        url = cluster.urls["ingress"]
        assert httpx.get(url, params={"operation": "GetCACaps"}).status_code == 200

        assert_scep_port_serves_no_operator_surface(url)
        # Ingress also reads the queue depths from the broker.
        assert_health_port_serves_metrics(
            cluster.ingress["ingress"],
            CACAPS_COUNTER,
            'scepline_queue_messages{queue="dlq",step="sign"}',
        )
        for worker in cluster.workers.values():
            assert_health_port_serves_metrics(worker, "scepline_pipeline_step_seconds")

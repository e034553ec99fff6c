"""A real SCEP client (strongSwan ``pki --scep``) enrols through ``scepline up``
with the Intune provider pointed at the simulator, as an operator would run it."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes

from tests.fixtures.processes import scepline_cluster, scepline_up
from tests.interop.clients import enrol_strongswan
from tests.intune.support import GRAPH_RESOURCE, success_notifications
from tests.intune_sim.fixtures import IntuneSim

pytestmark = pytest.mark.interop


def intune_settings(intune_sim: IntuneSim) -> dict[str, str]:
    return {
        "challenge_provider": "intune",
        "intune_tenant": intune_sim.tenant_domain,  # a domain works as well as the GUID
        "intune_client_id": intune_sim.client_id,
        "intune_client_secret": intune_sim.client_secret,
        "intune_authority_url": intune_sim.base_url,
        "intune_graph_url": intune_sim.graph_url,
        "intune_graph_resource_url": GRAPH_RESOURCE,
        "intune_ca_bundle": str(intune_sim.ca_bundle),
    }


def test_strongswan_enrols_with_an_intune_challenge(intune_sim: IntuneSim, tmp_path: Path):
    settings = intune_settings(intune_sim)
    challenge = intune_sim.admin.mint_challenge(subject="CN=strongswan-intune").challenge
    with scepline_up(tmp_path / "var", **settings) as (url, process):
        result = enrol_strongswan(
            url, tmp_path / "client", challenge=challenge, dn="CN=strongswan-intune"
        )
        log = process.log
    assert result.ok, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n{log[-3000:]}"
    assert result.certificate is not None
    assert challenge not in log and intune_sim.client_secret not in log
    notifications = [
        n
        for n in intune_sim.admin.notifications("success")
        if n.fields["certificateSerialNumber"] == format(result.certificate.serial_number, "x")
    ]
    assert len(notifications) == 1
    fields = notifications[0].fields
    assert fields["certificateThumbprint"] == (
        result.certificate.fingerprint(hashes.SHA1()).hex().upper()
    )
    assert success_notifications(intune_sim, fields["transactionId"]) == notifications


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_strongswan_enrols_through_the_services_on_rabbitmq_and_postgresql(
    intune_sim: IntuneSim, tmp_path: Path, rabbitmq_url: str, postgres_admin_dsn: str
):
    """The production shape: each service its own process, Intune validating
    and notified, a real client polling its PENDING request."""
    challenge = intune_sim.admin.mint_challenge(subject="CN=strongswan-cluster").challenge
    with scepline_cluster(
        tmp_path,
        rabbitmq_url=rabbitmq_url,
        postgres_admin_dsn=postgres_admin_dsn,
        settings=intune_settings(intune_sim),
        ingress_sync_wait={"pending": "0"},
    ) as cluster:
        result = enrol_strongswan(
            cluster.urls["pending"],
            tmp_path / "client",
            challenge=challenge,
            dn="CN=strongswan-cluster",
            poll_interval=1,
            max_poll_time=60,
        )
        logs = "".join(p.log for p in cluster.ingress.values())
    assert result.ok, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n{logs[-3000:]}"
    assert result.certificate is not None
    serial = format(result.certificate.serial_number, "x")
    notifications = [
        n
        for n in intune_sim.admin.notifications("success")
        if n.fields["certificateSerialNumber"] == serial
    ]
    assert len(notifications) == 1
    assert notifications[0].fields["certificateThumbprint"] == (
        result.certificate.fingerprint(hashes.SHA1()).hex().upper()
    )
    assert challenge not in logs

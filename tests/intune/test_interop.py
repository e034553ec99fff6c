"""A real SCEP client (strongSwan ``pki --scep``) enrols through ``scepline up``
with the Intune provider pointed at the simulator, as an operator would run it."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes

from tests.fixtures.processes import scepline_up
from tests.interop.clients import enrol_strongswan
from tests.intune.support import GRAPH_RESOURCE, success_notifications
from tests.intune_sim.fixtures import IntuneSim

pytestmark = pytest.mark.interop


def test_strongswan_enrols_with_an_intune_challenge(intune_sim: IntuneSim, tmp_path: Path):
    settings = {
        "challenge_provider": "intune",
        "intune_tenant": intune_sim.tenant_domain,  # a domain works as well as the GUID
        "intune_client_id": intune_sim.client_id,
        "intune_client_secret": intune_sim.client_secret,
        "intune_authority_url": intune_sim.base_url,
        "intune_graph_url": intune_sim.graph_url,
        "intune_graph_resource_url": GRAPH_RESOURCE,
        "intune_ca_bundle": str(intune_sim.ca_bundle),
    }
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

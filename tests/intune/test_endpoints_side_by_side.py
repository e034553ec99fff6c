"""An Intune endpoint beside static and manual ones in one product, against the
simulator, on both deployments (docs/endpoints.md): Intune validates and is
told of its endpoints' requests only (the device's own transactionID, whatever
the store calls the request); the static endpoint's requests never reach it."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from scepline_devtools.scep_client import ScepClient, build_csr
from scepline_shared.scep import PkiStatus
from scepline_shared.settings import Settings
from scepline_shared.store.models import NotifyState, RequestState
from tests.fixtures.scepline import running
from tests.intune.support import enrol, mint, success_notifications
from tests.intune_sim.fixtures import IntuneSim
from tests.support.pki import name, requester

CONFIG = """
[endpoints.fleet]
challenge = "intune"

[endpoints.fleet.profile]
validity_days = 60
extended_key_usage_from_csr = ["clientAuth", "serverAuth"]

[endpoints.wifi]
challenge = "static"
static_challenge = "wifi-secret"
"""


async def test_intune_and_static_endpoints_side_by_side(
    deployment_settings: Settings, intune_sim: IntuneSim, tmp_path: Path
):
    config = tmp_path / "scepline.toml"
    config.write_text(CONFIG)
    settings = deployment_settings.model_copy(update={"config": config})
    async with running(settings) as product:
        repository = product.embedded.repository
        at_default = await enrol(product, "tenant-1", "tx-tenant-1", mint(intune_sim, "tenant-1"))
        fleet = ScepClient("http://scepline/scep/fleet", http=product.http)
        csr = build_csr(
            requester("fleet-1").key, name("fleet-1"), challenge=mint(intune_sim, "fleet-1")
        )
        at_fleet = await fleet.enrol(csr, requester("fleet-1"), transaction_id="tx-fleet-1")
        wifi = ScepClient("http://scepline/scep/wifi", http=product.http)
        plain = build_csr(requester("wifi-1").key, name("wifi-1"), challenge="wifi-secret")
        at_wifi = await wifi.enrol(plain, requester("wifi-1"), transaction_id="tx-wifi-1")
        forged = build_csr(requester("wifi-2").key, name("wifi-2"), challenge="wifi-secret")
        intune_refuses = await fleet.enrol(forged, requester("wifi-2"), transaction_id="tx-w2")

        fleet_request = await repository.get("tx-fleet-1|at:fleet")
        wifi_request = await repository.get("tx-wifi-1|at:wifi")

    assert at_default.status is PkiStatus.SUCCESS
    assert at_fleet.status is PkiStatus.SUCCESS and at_wifi.status is PkiStatus.SUCCESS
    certificate = at_fleet.certificates[0]
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime.days == 60
    assert fleet_request is not None and fleet_request.state is RequestState.ISSUED
    assert fleet_request.notify_state is NotifyState.SENT
    # Intune knows the device's transactionID, not the store's key.
    [sent] = success_notifications(intune_sim, "tx-fleet-1")
    assert sent.fields["certificateSerialNumber"] == fleet_request.cert_serial
    assert wifi_request is not None and wifi_request.notify_state is NotifyState.NOT_REQUIRED
    assert success_notifications(intune_sim, "tx-wifi-1") == []
    assert intune_refuses.status is PkiStatus.FAILURE  # a static secret means nothing to Intune


async def test_an_intune_endpoint_beside_a_static_default_endpoint(
    deployment_settings: Settings, intune_sim: IntuneSim, tmp_path: Path
):
    """The settings' endpoint is static; only the file's ``fleet`` asks Intune."""
    config = tmp_path / "scepline.toml"
    config.write_text(CONFIG)
    settings = deployment_settings.model_copy(
        update={
            "config": config,
            "challenge_provider": "static",
            "static_challenge": SecretStr("lab"),
        }
    )
    async with running(settings) as product:
        repository = product.embedded.repository
        at_default = await enrol(product, "lab-1", "tx-lab-1", "lab")
        fleet = ScepClient("http://scepline/scep/fleet", http=product.http)
        csr = build_csr(
            requester("fleet-2").key, name("fleet-2"), challenge=mint(intune_sim, "fleet-2")
        )
        at_fleet = await fleet.enrol(csr, requester("fleet-2"), transaction_id="tx-fleet-2")
        default_request = await repository.get("tx-lab-1")
        fleet_request = await repository.get("tx-fleet-2|at:fleet")

    assert at_default.status is PkiStatus.SUCCESS and at_fleet.status is PkiStatus.SUCCESS
    assert default_request is not None
    assert default_request.notify_state is NotifyState.NOT_REQUIRED
    assert fleet_request is not None and fleet_request.notify_state is NotifyState.SENT
    assert len(success_notifications(intune_sim, "tx-fleet-2")) == 1
    assert success_notifications(intune_sim, "tx-lab-1") == []

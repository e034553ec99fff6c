"""Intune endpoints of two tenants in one product (``[endpoints.NAME.intune]``,
docs/endpoints.md), each against its own simulator, on both deployments:
each tenant validates and is told of its endpoint's requests only, a
challenge of one tenant means nothing to the other, and a tenant's revocation
requests reach only its own certificates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scepline_devtools.intune_sim import RunningSimulator, SimulatorAdmin, SimulatorState
from scepline_devtools.scep_client import ScepClient, build_csr
from scepline_shared.scep import CertRep, PkiStatus
from scepline_shared.settings import Settings
from scepline_shared.store.models import NotifyState
from tests.fixtures.scepline import RunningScepline, running
from tests.intune.support import GRAPH_RESOURCE, eventually, mint, success_notifications
from tests.intune_sim.fixtures import IntuneSim
from tests.support.pki import name, requester


@pytest.fixture(scope="module")
def second_tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IntuneSim]:
    """Another Intune: its own simulator, tenant, app registration and TLS CA."""
    state = SimulatorState()
    with RunningSimulator(state, data_dir=tmp_path_factory.mktemp("sim-b"), tls=True) as server:
        assert server.ca_bundle is not None
        app = state.default_app
        assert app.client_secret is not None
        with SimulatorAdmin(server.base_url, verify=server.ca_bundle) as admin:
            yield IntuneSim(
                base_url=server.base_url,
                ca_bundle=server.ca_bundle,
                admin=admin,
                state=state,
                tenant_id=state.tenant_id,
                tenant_domain=state.tenant_domain,
                client_id=app.client_id,
                client_secret=app.client_secret,
            )


def config_for(other: IntuneSim) -> str:
    return f"""
default_endpoint = false

[endpoints.fleet-a]
challenge = "intune"

[endpoints.fleet-b]
challenge = "intune"

[endpoints.fleet-b.intune]
tenant = "{other.tenant_id}"
client_id = "{other.client_id}"
client_secret = "{other.client_secret}"
authority_url = "{other.base_url}"
graph_url = "{other.graph_url}"
graph_resource_url = "{GRAPH_RESOURCE}"
ca_bundle = "{other.ca_bundle}"
"""


async def enrol(product: RunningScepline, endpoint: str, label: str, challenge: str) -> CertRep:
    who = requester(label)
    csr = build_csr(who.key, name(label), challenge=challenge)
    client = ScepClient(f"http://scepline/scep/{endpoint}", http=product.http)
    return await client.enrol(csr, who, transaction_id=f"tx-{label}")


async def test_each_tenant_validates_and_hears_of_its_own_endpoint(
    deployment_settings: Settings,
    intune_sim: IntuneSim,
    second_tenant: IntuneSim,
    tmp_path: Path,
):
    second_tenant.admin.reset()
    config = tmp_path / "scepline.toml"
    config.write_text(config_for(second_tenant))
    settings = deployment_settings.model_copy(
        update={
            "config": config,
            "intune_revocation_interval_seconds": 0.2,
        }
    )
    async with running(settings) as product:
        repository = product.embedded.repository
        a = await enrol(product, "fleet-a", "dev-a", mint(intune_sim, "dev-a"))
        b = await enrol(product, "fleet-b", "dev-b", mint(second_tenant, "dev-b"))
        crossed = await enrol(product, "fleet-b", "dev-x", mint(intune_sim, "dev-x"))
        stored_a = await repository.get("tx-dev-a|at:fleet-a")
        stored_b = await repository.get("tx-dev-b|at:fleet-b")
        assert stored_a is not None and stored_b is not None

        # Tenant B asks to revoke A's certificate (by its serial) and its own.
        second_tenant.admin.queue_revocations(
            serial_number=stored_a.cert_serial,
            issuer_name=a.certificates[0].issuer.rfc4514_string(),
        )
        second_tenant.admin.queue_revocations(transaction_id="tx-dev-b")

        async def answered() -> bool:
            return len(second_tenant.admin.revocations()["results"]) == 2

        await eventually(answered, "tenant B's revocation results")
        kept = await repository.get_certificate(stored_a.cert_serial or "")
        revoked = await repository.get_certificate(stored_b.cert_serial or "")

    assert a.status is PkiStatus.SUCCESS and b.status is PkiStatus.SUCCESS
    assert crossed.status is PkiStatus.FAILURE  # tenant A's challenge, tenant B's endpoint
    assert stored_a.notify_state is NotifyState.SENT and stored_b.notify_state is NotifyState.SENT
    assert len(success_notifications(intune_sim, "tx-dev-a")) == 1
    assert len(success_notifications(second_tenant, "tx-dev-b")) == 1
    assert success_notifications(intune_sim, "tx-dev-b") == []
    assert success_notifications(second_tenant, "tx-dev-a") == []
    results = second_tenant.admin.revocations()["results"]
    assert sorted(result["succeeded"] for result in results) == [False, True]
    assert kept is not None and kept.revoked_at is None
    assert revoked is not None and revoked.revoked_at is not None

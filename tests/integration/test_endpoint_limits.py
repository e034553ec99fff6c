"""Per-endpoint limits (``[endpoints.NAME.limits]``, docs/endpoints.md): one
endpoint's enrolment rate, its requests awaiting approval and its wait for the
outcome are its own; the other endpoints do not feel them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from scepline_devtools.scep_client import ScepClient, ScepHttpError, build_csr
from scepline_shared.scep import CertRep, PkiStatus
from scepline_shared.settings import Settings
from tests.fixtures.scepline import RunningScepline, data_dir_with_ca, running
from tests.support.pki import name, requester

CONFIG = """
[endpoints.wifi]
challenge = "static"
static_challenge = "wifi-secret"

[endpoints.wifi.limits]
enrolments_per_minute = 2

[endpoints.lab]
challenge = "static"
static_challenge = "lab-secret"

[endpoints.lab.limits]
sync_wait_seconds = 0

[endpoints.gear]
challenge = "manual"

[endpoints.gear.limits]
max_awaiting_approval = 1
"""


@pytest.fixture
async def product(tmp_path: Path, lab_ca_dir: Path) -> AsyncIterator[RunningScepline]:
    config = tmp_path / "scepline.toml"
    config.write_text(CONFIG)
    settings = Settings(
        data_dir=data_dir_with_ca(tmp_path, lab_ca_dir), config=config, sync_wait_seconds=10
    )
    async with running(settings) as running_product:
        yield running_product


async def enrol(
    product: RunningScepline, endpoint: str, label: str, challenge: str | None
) -> CertRep:
    who = requester(label)
    csr = build_csr(who.key, name(label), challenge=challenge)
    client = ScepClient(f"http://scepline/scep/{endpoint}", http=product.http)
    return await client.enrol(csr, who, transaction_id=f"tx-{label}")


async def test_an_endpoints_enrolment_rate_is_its_own(product: RunningScepline):
    first = await enrol(product, "wifi", "rate-1", "wifi-secret")
    second = await enrol(product, "wifi", "rate-2", "wifi-secret")
    with pytest.raises(ScepHttpError) as throttled:
        await enrol(product, "wifi", "rate-3", "wifi-secret")
    again = await enrol(product, "wifi", "rate-1", "wifi-secret")  # a retransmission
    elsewhere = await enrol(product, "lab", "rate-4", "lab-secret")

    assert first.status is PkiStatus.SUCCESS and second.status is PkiStatus.SUCCESS
    assert throttled.value.status_code == 503
    assert "endpoint wifi: too many enrolments" in throttled.value.body
    assert again.status is PkiStatus.SUCCESS
    assert elsewhere.status is PkiStatus.PENDING  # lab answers at once: sync_wait_seconds = 0
    metrics = (await product.health.get("/metrics")).text
    assert (
        'scepline_endpoint_requests_total{endpoint="wifi",operation="PKIOperation",'
        'outcome="throttled"} 1.0' in metrics
    )


async def test_an_endpoints_requests_awaiting_approval_are_capped(product: RunningScepline):
    first = await enrol(product, "gear", "cap-1", None)
    second = await enrol(product, "gear", "cap-2", None)

    assert first.status is PkiStatus.PENDING
    assert second.status is PkiStatus.FAILURE
    assert second.fail_info_text is not None
    assert second.fail_info_text.startswith("too many requests await approval")

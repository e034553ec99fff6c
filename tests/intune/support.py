"""Configuration that points the product's Intune client at the simulator."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography import x509

from scepline_devtools.intune_sim import GRAPH_SCOPE, RecordedNotification
from scepline_devtools.scep_client import build_csr
from scepline_shared.broker.base import Broker
from scepline_shared.intune import IntuneClient, IntuneConfig
from scepline_shared.messages import DeadLetter
from scepline_shared.pipeline import Step
from scepline_shared.scep import CertRep, PkiStatus
from tests.fixtures.scepline import RunningScepline
from tests.intune_sim.fixtures import IntuneSim
from tests.support.pki import name, requester

# The simulator serves Graph at its own address but issues tokens for Graph's
# real resource id, as a sovereign-cloud or proxy setup would.
GRAPH_RESOURCE = GRAPH_SCOPE.removesuffix("/.default")


def intune_config(sim: IntuneSim, **overrides: Any) -> IntuneConfig:
    options: dict[str, Any] = {
        "tenant": sim.tenant_id,
        "client_id": sim.client_id,
        "client_secret": sim.client_secret,
        "authority_url": sim.base_url,
        "graph_url": sim.graph_url,
        "graph_resource_url": GRAPH_RESOURCE,
        "ca_bundle": sim.ca_bundle,
        "timeout_seconds": 5.0,
        "retry_budget_seconds": 3.0,
        "caller_info": "scepline-tests/1.0",
    }
    options.update(overrides)
    return IntuneConfig(**options)


def intune_client(sim: IntuneSim, **overrides: Any) -> IntuneClient:
    return IntuneClient(intune_config(sim, **overrides))


def intune_settings(sim: IntuneSim, **overrides: Any) -> dict[str, Any]:
    """``Settings`` fields for the product with the Intune provider on the simulator."""
    options: dict[str, Any] = {
        "challenge_provider": "intune",
        "intune_tenant": sim.tenant_id,
        "intune_client_id": sim.client_id,
        "intune_client_secret": sim.client_secret,
        "intune_authority_url": sim.base_url,
        "intune_graph_url": sim.graph_url,
        "intune_graph_resource_url": GRAPH_RESOURCE,
        "intune_ca_bundle": sim.ca_bundle,
        "intune_timeout_seconds": 5.0,
        "intune_retry_budget_seconds": 2.0,
    }
    options.update(overrides)
    return options


# -- driving the product ------------------------------------------------------------


async def enrol(
    product: RunningScepline,
    label: str,
    transaction_id: str,
    challenge: str | None,
    *,
    subject: x509.Name | None = None,
) -> CertRep:
    """A device ``label`` enrols with ``challenge`` in its CSR (subject CN=label)."""
    who = requester(label)
    csr = build_csr(who.key, name(label) if subject is None else subject, challenge=challenge)
    return await product.client.enrol(csr, who, transaction_id=transaction_id)


def mint(sim: IntuneSim, label: str, **spec: Any) -> str:
    """A challenge for device ``label``, as Intune would put on it."""
    spec.setdefault("subject", f"CN={label}")
    return sim.admin.mint_challenge(**spec).challenge


async def poll_until_final(product: RunningScepline, label: str, transaction_id: str) -> CertRep:
    for _ in range(400):
        rep = await product.client.poll(requester(label), transaction_id, name(label))
        if rep.status is not PkiStatus.PENDING:
            return rep
        await asyncio.sleep(0.05)
    raise AssertionError(f"{transaction_id} still PENDING")


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def wait_for_dead_letters(broker: Broker, step: Step, count: int) -> list[DeadLetter]:
    letters: list[DeadLetter] = []

    async def enough() -> bool:
        nonlocal letters
        letters = await broker.dead_letters(step)
        return len(letters) >= count

    await eventually(enough, f"{count} dead letters in {step.value}", timeout=60)
    return letters


def success_notifications(sim: IntuneSim, transaction_id: str) -> list[RecordedNotification]:
    return [
        n for n in sim.admin.notifications("success") if n.fields["transactionId"] == transaction_id
    ]

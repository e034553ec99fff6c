"""Retention (`scepline db prune`): final requests and superseded CRLs older
than the cutoff go; whatever still matters stays. On SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from scepline_shared.store import RequestRepository, RequestState
from scepline_shared.store.models import RequestEvent
from tests.shared.store.helpers import (
    T0,
    FakeClock,
    certificate_record,
    count_rows,
    present,
    record,
    sign,
    validated,
)
from tests.support.commands import run_scepline

CUTOFF = T0 + timedelta(days=90)


async def _issued(repository: RequestRepository, transaction_id: str, serial: str) -> None:
    await validated(repository, transaction_id)
    present(await sign(repository, transaction_id, certificate_record(serial)))
    await repository.transition(
        transaction_id=transaction_id,
        from_state=RequestState.SIGNED,
        to_state=RequestState.ISSUED,
        detail="released",
    )


async def _failed(repository: RequestRepository, transaction_id: str) -> None:
    await record(repository, transaction_id)
    await repository.transition(
        transaction_id=transaction_id,
        from_state=RequestState.RECEIVED,
        to_state=RequestState.REJECTED,
        detail="bad challenge",
    )


async def test_old_final_requests_go_with_their_history_and_their_certificates_stay(
    clocked_repository: RequestRepository, clock: FakeClock, store_engine: AsyncEngine
) -> None:
    repository = clocked_repository
    await _issued(repository, "old-issued", "a01")
    await _failed(repository, "old-rejected")
    await _failed(repository, "old-parked")
    await repository.park(transaction_id="old-parked", reason="waits for an operator")
    await record(repository, "old-pending")  # never finished: the sweep's business
    clock.advance(timedelta(days=100))
    await _issued(repository, "recent", "a02")

    deleted = await repository.prune(untouched_since=CUTOFF)

    assert deleted == 2
    assert await repository.get("old-issued") is None
    assert await repository.get("old-rejected") is None
    for kept in ("old-parked", "old-pending", "recent"):
        assert await repository.get(kept) is not None, kept
    assert await repository.history("old-issued") == []
    assert await count_rows(store_engine, RequestEvent) == sum(
        [len(await repository.history(t)) for t in ("old-parked", "old-pending", "recent")]
    )
    assert present(await repository.get_certificate("a01")).transaction_id == "old-issued"


async def test_superseded_expired_crls_go_and_each_cas_latest_stays(
    repository: RequestRepository,
) -> None:
    ca_a, ca_b = "a" * 64, "b" * 64
    for number in (1, 2, 3):
        await repository.store_crl(
            number=number,
            issuer_key_id=ca_a,
            this_update=T0 + timedelta(days=number),
            next_update=T0 + timedelta(days=number + 7),
            der=b"crl",
        )
    await repository.store_crl(  # B's only CRL, long expired: still B's latest
        number=4, issuer_key_id=ca_b, this_update=T0, next_update=T0 + timedelta(days=7), der=b"crl"
    )

    deleted = await repository.prune_crls(expired_before=CUTOFF)

    assert deleted == 2
    assert present(await repository.latest_crl(ca_a)).number == 3
    assert present(await repository.latest_crl(ca_b)).number == 4
    assert await repository.prune_crls(expired_before=CUTOFF) == 0


def test_the_command_needs_a_retention_of_at_least_a_day(tmp_path: Path) -> None:
    def prune(*args: str) -> subprocess.CompletedProcess[str]:
        return run_scepline({"SCEPLINE_DATA_DIR": str(tmp_path)}, "db", "prune", *args)

    created = run_scepline({"SCEPLINE_DATA_DIR": str(tmp_path)}, "db", "upgrade")
    refused = prune("--older-than-days", "0")
    done = prune("--older-than-days", "30")

    assert created.returncode == 0, created.stderr

    assert refused.returncode == 2 and "at least 1" in refused.stderr
    assert done.returncode == 0, done.stderr
    assert "deleted 0 final request(s)" in done.stdout
    assert "deleted 0 superseded CRL(s)" in done.stdout

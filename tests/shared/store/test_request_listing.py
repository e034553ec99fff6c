"""`scepline request list`: the requests in one state, most recently changed first."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from scepline_shared.store import RequestRepository, RequestState
from tests.shared.store.helpers import FakeClock, record, validated
from tests.support.commands import run_scepline


async def test_requests_are_listed_by_state_most_recently_changed_first(
    clocked_repository: RequestRepository, clock: FakeClock
) -> None:
    await record(clocked_repository, "waiting-1")
    clock.advance(timedelta(minutes=1))
    await validated(clocked_repository, "moved-on")
    clock.advance(timedelta(minutes=1))
    await record(clocked_repository, "waiting-2")

    received = await clocked_repository.in_state(RequestState.RECEIVED)
    validated_now = await clocked_repository.in_state(RequestState.VALIDATED)
    one = await clocked_repository.in_state(RequestState.RECEIVED, limit=1)

    assert [r.transaction_id for r in received] == ["waiting-2", "waiting-1"]
    assert [r.transaction_id for r in validated_now] == ["moved-on"]
    assert [r.transaction_id for r in one] == ["waiting-2"]


def test_the_command_lists_a_state(tmp_path: Path) -> None:
    created = run_scepline({"SCEPLINE_DATA_DIR": str(tmp_path)}, "db", "upgrade")
    listed = run_scepline(
        {"SCEPLINE_DATA_DIR": str(tmp_path)}, "request", "list", "--state", "SIGNED"
    )

    assert created.returncode == 0, created.stderr
    assert listed.returncode == 0, listed.stderr
    assert "0 request(s) in SIGNED" in listed.stdout

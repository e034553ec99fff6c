"""The simulator's own admin API (/_sim), and running it in another process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from scepline_devtools.intune_sim import INTUNE_SCOPE, FaultKind, Route, SimulatorAdmin
from tests.intune_sim.fixtures import IntuneSim
from tests.intune_sim.helpers import Caller, csr


def test_reset_returns_to_the_initial_configuration(intune_sim: IntuneSim, caller: Caller) -> None:
    caller.token()
    intune_sim.admin.set_knobs(shard="shard-9", replay="reject")
    intune_sim.admin.register_app(
        intune_sim.state.default_app.model_copy(update={"has_role": False})
    )
    intune_sim.admin.add_fault(Route.TOKEN, FaultKind.THROTTLE)
    intune_sim.admin.advance_clock(3600)

    intune_sim.admin.reset()

    state = intune_sim.admin.state()
    assert state["knobs"]["shard"] == "shard-1" and state["knobs"]["replay"] == "allow"
    assert state["faults"] == [] and state["clock"]["offset_seconds"] == 0
    assert intune_sim.state.default_app.has_role
    assert intune_sim.admin.calls() == [] and intune_sim.admin.counters()["tokens"] == {}


def test_unknown_or_invalid_knobs_are_refused(intune_sim: IntuneSim) -> None:
    for changes in ({"no_such_knob": 1}, {"replay": "sometimes"}):
        with pytest.raises(httpx.HTTPStatusError) as refused:
            intune_sim.admin.set_knobs(**changes)
        assert refused.value.response.status_code == 422


def test_the_clock_moves_only_simulated_time(intune_sim: IntuneSim) -> None:
    before = intune_sim.admin.state()["clock"]["now"]
    moved = intune_sim.admin.advance_clock(600)
    assert moved.offset_seconds == 600 and moved.now.isoformat() > before
    assert intune_sim.admin.set_clock_offset(-60).offset_seconds == -60


def test_calls_are_filtered_by_route_and_counted(intune_sim: IntuneSim, caller: Caller) -> None:
    caller.token()
    caller.discover()
    assert [c.route for c in intune_sim.admin.calls(Route.TOKEN)] == [Route.TOKEN, Route.TOKEN]
    counters = intune_sim.admin.counters()
    assert counters["calls"] == {"token": 2, "graph-endpoints": 1}
    assert intune_sim.admin.token_count(INTUNE_SCOPE) == 1


def test_a_challenge_reports_its_uses(intune_sim: IntuneSim, caller: Caller) -> None:
    minted = intune_sim.admin.mint_challenge()
    caller.validate(csr(challenge=minted.challenge))
    url = f"{intune_sim.base_url}/_sim/challenges/{minted.id}"
    assert caller.http.get(url).json() == {"id": minted.id, "untargeted": False, "uses": 1}
    assert (
        caller.http.post(f"{intune_sim.base_url}/_sim/challenges/nope/untarget").status_code == 404
    )


def test_scepline_intune_sim_runs_in_its_own_process_and_describes_itself(
    tmp_path: Path,
) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scepline",
            "intune-sim",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        info_file = tmp_path / "sim.json"
        while True:
            if info_file.exists():
                info = json.loads(info_file.read_text())
                try:
                    with SimulatorAdmin(info["base_url"], verify=Path(info["ca_bundle"])) as admin:
                        state = admin.state()
                    break
                except httpx.ConnectError:
                    pass
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        assert state["tenant_id"] == info["tenant_id"]
        assert info["authority"] == f"{info['base_url']}/{info['tenant_id']}"
        assert info["client_id"] and info["client_secret"]
        assert Path(info["ca_bundle"]).name == "sim-ca.pem"
    finally:
        process.terminate()
        process.wait(timeout=10)

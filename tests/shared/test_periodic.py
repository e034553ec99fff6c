"""repeat_until_stopped: the loop behind the sweep, CRL publishing and the
queue depth metrics."""

from __future__ import annotations

import asyncio

from scepline_shared.periodic import repeat_until_stopped


async def test_rounds_repeat_every_interval_until_stopped() -> None:
    stopped = asyncio.Event()
    rounds = 0

    async def one_round() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 3:
            stopped.set()

    await asyncio.wait_for(repeat_until_stopped(stopped, 0.01, one_round, failure="x"), 2)

    assert rounds == 3


async def test_a_failing_round_is_logged_and_the_next_one_runs(capsys) -> None:
    stopped = asyncio.Event()
    rounds = 0

    async def one_round() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise ConnectionError("store unreachable")
        stopped.set()

    loop = repeat_until_stopped(stopped, 0.01, one_round, failure="sweep failed")
    await asyncio.wait_for(loop, 2)

    assert rounds == 2
    assert "sweep failed" in capsys.readouterr().out


async def test_stopped_before_it_starts_it_returns_without_a_round() -> None:
    # A service shutting down right after start-up must not wait for a loop
    # that never saw its stop.
    stopped = asyncio.Event()
    stopped.set()
    rounds = 0

    async def one_round() -> None:
        nonlocal rounds
        rounds += 1

    await asyncio.wait_for(repeat_until_stopped(stopped, 60, one_round, failure="x"), 1)

    assert rounds == 0

"""The one loop behind every periodic job (the sweep, CRL publishing, queue
depth metrics): a round now, then one every ``interval`` seconds until stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from .log import get_logger

__all__ = ["repeat_until_stopped"]

log = get_logger(__name__)


async def repeat_until_stopped(
    stopped: asyncio.Event,
    interval: float,
    one_round: Callable[[], Awaitable[object]],
    *,
    failure: str,
) -> None:
    """Await ``one_round()`` now and then every ``interval`` seconds until
    ``stopped`` is set; a round in progress finishes. A round that raises is
    logged as ``failure`` and the next one runs on schedule: a periodic job
    outlives a passing outage of what it reads."""
    while not stopped.is_set():
        try:
            await one_round()
        except Exception:
            log.exception(failure)
        with contextlib.suppress(TimeoutError):  # the interval passed: next round
            await asyncio.wait_for(stopped.wait(), timeout=interval)

"""How long to wait before trying again: the one place retry timing is decided.

Every retry spreads out with jitter, so a fleet of workers (or a burst of
requests that failed together) does not come back in step.
"""

from __future__ import annotations

import random

__all__ = ["backoff_delay", "spread_upwards"]


def backoff_delay(attempt: int, *, base: float, cap: float, at_least: float = 0.0) -> float:
    """Exponential backoff with jitter: a uniform wait between ``at_least`` of
    the step and the step, ``min(cap, base * 2**attempt)`` (``attempt`` counts
    from 0). ``at_least=0`` is full jitter; 0.5 never retries straight away."""
    step = min(cap, base * 2 ** max(attempt, 0))
    return random.uniform(at_least * step, step)


def spread_upwards(delay: float, *, cap: float, fraction: float) -> float:
    """``delay`` clamped to ``[0, cap]``, then spread upwards by up to
    ``fraction`` of itself without passing ``cap``: a wait somebody asked for
    (a Retry-After, a delay queue's TTL) never ends early."""
    delay = min(max(0.0, delay), cap)
    return min(delay * (1 + random.uniform(0, fraction)), cap)

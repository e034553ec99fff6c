"""Per-endpoint limits ingress enforces (``[endpoints.NAME.limits]``,
docs/endpoints.md): how many new enrolments an endpoint takes per minute.

A token bucket per endpoint and serving process: it holds up to a minute's
worth of requests and refills continuously, so bursts up to the limit pass and
a sustained flood gets the rate. Beyond it a new request is answered HTTP 503
with Retry-After, which SCEP clients retry; a retransmission or poll of a
request already recorded always passes (its device is owed an answer).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Throttled", "TokenBucket"]


class Throttled(Exception):
    """An endpoint's enrolment rate is used up: answer 503, try again later."""

    def __init__(self, endpoint: str, retry_after: float) -> None:
        super().__init__(f"endpoint {endpoint}: too many enrolments; retry in {retry_after:.0f} s")
        self.endpoint = endpoint
        self.retry_after = retry_after


class TokenBucket:
    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError("a rate limit needs at least one request per minute")
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._tokens = self._capacity
        self._clock = clock
        self._at = clock()

    def take(self) -> bool:
        """Take one request's token if there is one."""
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def retry_after(self) -> float:
        """Seconds until the next token."""
        return max(1.0, (1.0 - self._tokens) / self._rate)

"""One HTTP exchange with Graph or Intune, retried within a budget of seconds.

Retries cover what the next attempt may cure: connection failures, timeouts,
429 and 500/502/503/504. A ``Retry-After`` (header, or the ``RetryAfter`` in
an Intune FE error body) is honoured as a minimum wait; when that wait would
overrun the budget the call gives up at once with ``IntuneUnavailable`` naming
it, so the pipeline defers the request instead of a device waiting on a socket.
Every attempt carries a fresh ``client-request-id`` (Intune's activity id).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import ssl
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ..backoff import backoff_delay
from ..log import get_logger
from .config import IntuneConfig
from .errors import IntuneUnavailable

__all__ = ["RETRYABLE_STATUSES", "Exchange", "RetriesExhausted", "Transport", "retry_after_of"]

log = get_logger(__name__)

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
_BACKOFF_BASE = 0.5
_BACKOFF_CAP = 4.0


@dataclass(frozen=True)
class Exchange:
    """The final answer to a call (any status not worth retrying, or a 2xx)."""

    response: httpx.Response
    activity_id: str

    @property
    def status(self) -> int:
        return self.response.status_code


class RetriesExhausted(IntuneUnavailable):
    """The budget ran out; ``status`` is the last HTTP status (None: no answer at all)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        activity_id: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, activity_id=activity_id, retry_after=retry_after)
        self.status = status


def _verify(config: IntuneConfig) -> ssl.SSLContext | bool:
    if config.ca_bundle is None:
        return True
    return ssl.create_default_context(cafile=str(config.ca_bundle))


class Transport:
    def __init__(self, config: IntuneConfig) -> None:
        self._config = config
        self._http = httpx.AsyncClient(
            verify=_verify(config),
            # With a private CA bundle, SSL_CERT_FILE and friends must not win over it.
            trust_env=config.ca_bundle is None,
            timeout=httpx.Timeout(config.timeout_seconds, connect=min(5.0, config.timeout_seconds)),
            follow_redirects=False,  # a redirect would carry our bearer token elsewhere
            headers={"User-Agent": config.caller_info, "Accept": "application/json"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def deadline(self) -> float:
        return time.monotonic() + self._config.retry_budget_seconds

    async def send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        token: str,
        deadline: float,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Exchange:
        """The final response; RetriesExhausted when only retryable failures came back."""
        attempt = 0
        while True:
            attempt += 1
            activity_id = str(uuid.uuid4())
            request_headers = {
                "Authorization": f"Bearer {token}",
                "client-request-id": activity_id,
                **(headers or {}),
            }
            try:
                response = await self._http.request(method, url, headers=request_headers, json=body)
            except httpx.TransportError as exc:
                status, retry_after = None, None
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.status_code not in RETRYABLE_STATUSES:
                    return Exchange(response, activity_id)
                status, retry_after = response.status_code, retry_after_of(response)
                reason = f"HTTP {status}"
            # At least half the step: the device is waiting, but not in step with others.
            wait = backoff_delay(attempt - 1, base=_BACKOFF_BASE, cap=_BACKOFF_CAP, at_least=0.5)
            if retry_after is not None:
                wait = max(wait, retry_after)
            give_up = attempt >= self._config.max_attempts or time.monotonic() + wait > deadline
            log.warning(
                "intune call failed",
                call=what,
                attempt=attempt,
                reason=reason,
                activity_id=activity_id,
                retry_in=None if give_up else round(wait, 3),
            )
            if give_up:
                raise RetriesExhausted(
                    f"{what}: {reason} after {attempt} attempt(s)",
                    status=status,
                    activity_id=activity_id,
                    retry_after=retry_after,
                )
            await asyncio.sleep(wait)


def retry_after_of(response: httpx.Response) -> float | None:
    """Seconds the service asked us to wait: Retry-After, else the FE body's RetryAfter."""
    header = response.headers.get("retry-after")
    if header:
        header = header.strip()
        if header.isdigit():
            return float(header)
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
    return _fe_retry_after(response)


def _fe_retry_after(response: httpx.Response) -> float | None:
    # Intune FE errors nest a JSON document in error.message
    # (docs/specs/intune-api.md, "Calls, results and errors").
    try:
        inner = json.loads(response.json()["error"]["message"])
        value = inner.get("RetryAfter")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) and value >= 0 else None

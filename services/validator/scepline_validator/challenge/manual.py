"""Manual approval: an operator decides each first enrolment.

The validate step leaves the request AWAITING_APPROVAL and the device hears
PENDING each time it polls, until `scepline request approve TXID` (VALIDATED,
approval ``operator``: signed next) or `scepline request reject TXID` (FAILED),
or until the endpoint's ``approval_ttl_hours`` pass (the sweep fails it). A
renewal of a certificate of the endpoint that keeps its identity needs nobody.
"""

from __future__ import annotations

from typing import Protocol

from scepline_shared.store.models import DEFAULT_ENDPOINT

from .base import ValidationOutcome, ValidationRequest

__all__ = ["CountsWaiting", "ManualApprovalValidator"]


class CountsWaiting(Protocol):
    async def count_awaiting_approval(self, endpoint: str) -> int: ...


class ManualApprovalValidator:
    """``store`` and ``limit``: at most ``limit`` requests of ``endpoint`` wait
    for an operator at once (``[endpoints.NAME.limits] max_awaiting_approval``);
    beyond, a new one is refused. No store or a limit of 0: no limit."""

    # An operator should only be asked about a request the signer would issue.
    checks_profile_first = True

    def __init__(
        self,
        store: CountsWaiting | None = None,
        *,
        endpoint: str = DEFAULT_ENDPOINT,
        limit: int = 0,
    ) -> None:
        self._store = store
        self._endpoint = endpoint
        self._limit = limit

    async def validate(self, request: ValidationRequest) -> ValidationOutcome:
        if (renewal := ValidationOutcome.renewal_kept(request)) is not None:
            return renewal
        if self._store is not None and self._limit > 0:
            waiting = await self._store.count_awaiting_approval(self._endpoint)
            if waiting >= self._limit:
                return ValidationOutcome.reject(
                    f"too many requests await approval at this endpoint ({waiting}; "
                    f"max_awaiting_approval is {self._limit})"
                )
        return ValidationOutcome.await_operator(
            "waiting for an operator: scepline request approve|reject"
        )

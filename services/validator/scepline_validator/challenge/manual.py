"""Manual approval: an operator decides each first enrolment.

The validate step leaves the request AWAITING_APPROVAL and the device hears
PENDING each time it polls, until `scepline request approve TXID` (VALIDATED,
approval ``operator``: signed next) or `scepline request reject TXID` (FAILED),
or until the endpoint's ``approval_ttl_hours`` pass (the sweep fails it). A
renewal of a certificate of the endpoint that keeps its identity needs nobody.
"""

from __future__ import annotations

from scepline_shared.store.models import Approval

from .base import ValidationOutcome, ValidationRequest

__all__ = ["ManualApprovalValidator"]


class ManualApprovalValidator:
    # An operator should only be asked about a request the signer would issue.
    checks_profile_first = True

    async def validate(self, request: ValidationRequest) -> ValidationOutcome:
        if request.renewal_of_serial is not None:
            return ValidationOutcome.approve(
                f"renewal of {request.renewal_of_serial}, identity kept",
                approval=Approval.RENEWAL,
            )
        return ValidationOutcome.await_operator(
            "waiting for an operator: scepline request approve|reject"
        )

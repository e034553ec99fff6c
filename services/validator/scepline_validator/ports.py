"""What the validate step needs from the state store, and nothing more.

The store's RequestRepository provides it; the step depends on this much only,
so it cannot revoke, sign, publish CRLs or prune by accident.
"""

from __future__ import annotations

from typing import Protocol

from scepline_shared.store.ports import MovesRequests, ReadsCertificates

from .challenge.manual import CountsWaiting
from .challenge.one_time import ConsumesChallenges

__all__ = ["ValidatorStore"]


class ValidatorStore(MovesRequests, ReadsCertificates, ConsumesChallenges, CountsWaiting, Protocol):
    async def revoked_in_lineage(self, serial: str | int) -> str | None: ...

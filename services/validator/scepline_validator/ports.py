"""What the validate step needs from the state store, and nothing more.

The store's RequestRepository provides it; the step depends on this much only,
so it cannot revoke, sign, publish CRLs or prune by accident.
"""

from __future__ import annotations

from typing import Any, Protocol

from scepline_shared.store.models import RequestState
from scepline_shared.store.views import CertificateView, RequestView

__all__ = ["ValidatorStore"]


class ValidatorStore(Protocol):
    async def get(self, transaction_id: str) -> RequestView | None: ...

    async def transition(
        self,
        *,
        transaction_id: str,
        from_state: RequestState,
        to_state: RequestState,
        detail: str,
        **fields: Any,
    ) -> RequestView | None: ...

    async def get_certificate(self, serial: str | int) -> CertificateView | None: ...

    async def revoked_in_lineage(self, serial: str | int) -> str | None: ...

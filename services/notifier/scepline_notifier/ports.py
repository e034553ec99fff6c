"""What the notify step and Intune's revocation sync need from the state store.

The store's RequestRepository provides it; the notifier depends on this much
only: releasing or withholding a signed certificate, its notification state,
and revoking certificates Intune asks about.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from scepline_shared.store.models import NotifyState, RequestState
from scepline_shared.store.ports import MovesRequests, ReadsCertificates
from scepline_shared.store.views import CertificateView, RequestView

__all__ = ["NotifierStore"]


class NotifierStore(MovesRequests, ReadsCertificates, Protocol):
    async def transition_notify(
        self,
        *,
        transaction_id: str,
        from_state: NotifyState,
        to_state: NotifyState,
        detail: str,
    ) -> RequestView | None: ...

    async def fail_and_revoke(
        self,
        *,
        transaction_id: str,
        from_state: RequestState,
        detail: str,
        reason: int = ...,
        **fields: Any,
    ) -> RequestView | None: ...

    async def issuers(self) -> list[str]: ...

    async def revoke(
        self, serial: str | int, *, reason: int, at: datetime | None = None
    ) -> CertificateView | None: ...

"""Small views of the store that every step needs; each service composes its own
narrow port (``<service>/ports.py``) from these and what is its alone. The
store's RequestRepository provides them all."""

from __future__ import annotations

from typing import Any, Protocol

from scepline_shared.store.models import RequestState
from scepline_shared.store.views import CertificateView, RequestView

__all__ = ["MovesRequests", "ReadsCertificates", "ReadsRequests"]


class ReadsRequests(Protocol):
    async def get(self, transaction_id: str) -> RequestView | None: ...


class MovesRequests(ReadsRequests, Protocol):
    async def transition(
        self,
        *,
        transaction_id: str,
        from_state: RequestState,
        to_state: RequestState,
        detail: str,
        **fields: Any,
    ) -> RequestView | None: ...


class ReadsCertificates(Protocol):
    async def get_certificate(self, serial: str | int) -> CertificateView | None: ...

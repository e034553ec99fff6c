"""What ingress needs from the state store: recording requests, answering from
what is recorded (polls, GetCert, CRLs), the sweep (approved requests to sign,
unapproved ones that expire), and the dead-letter figures.

The store's RequestRepository provides it; ingress depends on this much only.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta
from typing import Protocol

from scepline_shared.store.ports import ReadsCertificates, ReadsRequests
from scepline_shared.store.views import CrlView, RecordResult, RequestView

__all__ = ["IngressStore"]


class IngressStore(ReadsRequests, ReadsCertificates, Protocol):
    async def record_request(
        self,
        *,
        transaction_id: str,
        signer_key_id: str,
        message_type: int,
        csr_der: bytes,
        signer_cert_der: bytes,
        subject: str,
        renewal_of_serial: str | None = None,
        queued: bool = False,
        endpoint: str = ...,
    ) -> RecordResult: ...

    async def latest_crl(self, issuer_key_id: str) -> CrlView | None: ...

    async def find_stale(self, *, older_than: timedelta, limit: int) -> list[RequestView]: ...

    async def mark_queued(self, transaction_id: str) -> bool: ...

    async def approved_unqueued(self, *, limit: int = ...) -> list[RequestView]: ...

    async def expire_unapproved(
        self, *, endpoint: str, waited: timedelta, limit: int = ...
    ) -> list[RequestView]: ...

    async def unfinished(self, transaction_ids: Collection[str]) -> set[str]: ...

    async def record_refusal(
        self, *, transaction_id: str, message_type: int | None, fail_info: int, reason: str
    ) -> None: ...

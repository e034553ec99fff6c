"""Requests: recording, the state machine, history and the sweep.

With `certificates.py` (which it extends) this is the only code that reads or
writes the state store. Every method is one transaction. State changes are compare-and-set updates
(`WHERE state = :from_state`), so any number of workers may race on one
request: exactly one moves it, the others get None and treat the step as
already done. Results are frozen views; ORM objects never leave this module.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from scepline_shared.store._convert import request_view
from scepline_shared.store.certificates import CertificateRepository, check_key_id, utc_now
from scepline_shared.store.errors import IllegalTransition, SerialCollision
from scepline_shared.store.models import (
    ALLOWED_NOTIFY_TRANSITIONS,
    ALLOWED_TRANSITIONS,
    NON_TERMINAL_STATES,
    IssuedCertificate,
    NotifyState,
    RequestEvent,
    RequestState,
    ScepRequest,
)
from scepline_shared.store.views import (
    EventView,
    IssuedCertificateRecord,
    RecordResult,
    RequestView,
    serial_hex,
)

__all__ = ["MESSAGE_TYPES", "TRANSITION_FIELDS", "RequestRepository", "utc_now"]

# SCEP messageType values that create a request: PKCSReq (19), RenewalReq (17).
MESSAGE_TYPES: frozenset[int] = frozenset({17, 19})

# Columns `transition` may set alongside the state.
TRANSITION_FIELDS: frozenset[str] = frozenset(
    {"fail_info", "fail_reason", "provider_code", "cert_serial", "cert_der", "notify_state"}
)

# SCEP failInfo: badAlg, badMessageCheck, badRequest, badTime, badCertId.
_FAIL_INFOS: frozenset[int] = frozenset(range(5))


class RequestRepository(CertificateRepository):
    """Requests and their history, plus (inherited) certificates and CRLs.

    Built from one `async_sessionmaker`; `clock` exists for tests and must
    return aware datetimes.
    """

    # -- requests ---------------------------------------------------------

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
    ) -> RecordResult:
        """Store a new request in RECEIVED, or return the one already under this id.

        Race-safe: of concurrent calls with one transaction id exactly one
        creates the row. The caller compares `signer_key_id` of an existing
        row with its own (a different key must not see someone else's request).
        """
        _check_transaction_id(transaction_id)
        check_key_id(signer_key_id)
        if message_type not in MESSAGE_TYPES:
            raise ValueError(f"message_type {message_type} does not create a request")
        renewal = serial_hex(renewal_of_serial) if renewal_of_serial is not None else None

        # Retransmissions are common; answer them without provoking an IntegrityError.
        existing = await self.get(transaction_id)
        if existing is not None:
            return RecordResult(request=existing, created=False)

        now = self._clock()
        requests = ScepRequest.__table__
        try:
            async with self._engine.begin() as connection:
                result = await connection.execute(
                    insert(requests)
                    .values(
                        transaction_id=transaction_id,
                        signer_key_id=signer_key_id,
                        message_type=message_type,
                        csr_der=csr_der,
                        signer_cert_der=signer_cert_der,
                        subject=subject,
                        renewal_of_serial=renewal,
                        state=RequestState.RECEIVED,
                        notify_state=NotifyState.NONE,
                        attempts=1 if queued else 0,
                        version=1,
                        created_at=now,
                        updated_at=now,
                        queued_at=now if queued else None,
                    )
                    .returning(*requests.c)
                )
                row = result.one()
                await connection.execute(
                    insert(RequestEvent.__table__).values(
                        request_id=row.id,
                        at=now,
                        kind="state",
                        from_state=None,
                        to_state=RequestState.RECEIVED.value,
                        detail="recorded",
                    )
                )
        except IntegrityError:
            # Lost the race to a concurrent insert of the same transaction id.
            existing = await self.get(transaction_id)
            if existing is None:
                raise
            return RecordResult(request=existing, created=False)
        return RecordResult(request=request_view(row), created=True)  # type: ignore[arg-type]

    async def get(self, transaction_id: str) -> RequestView | None:
        requests = ScepRequest.__table__
        async with self._reader.connect() as connection:
            result = await connection.execute(
                select(requests).where(requests.c.transaction_id == transaction_id)
            )
            row = result.first()
        return None if row is None else request_view(row)  # type: ignore[arg-type]

    async def transition(
        self,
        *,
        transaction_id: str,
        from_state: RequestState,
        to_state: RequestState,
        detail: str,
        **fields: Any,
    ) -> RequestView | None:
        """Move a request from `from_state` to `to_state`, setting `fields` too.

        Returns the new view, or None if the request is not (or no longer) in
        `from_state`. Raises IllegalTransition (a ValueError) for a move the
        state machine does not have, TypeError for a field outside
        TRANSITION_FIELDS.
        """
        source, target = RequestState(from_state), RequestState(to_state)
        if target not in ALLOWED_TRANSITIONS[source]:
            raise IllegalTransition(source, target)
        unknown = set(fields) - TRANSITION_FIELDS
        if unknown:
            raise TypeError(f"transition cannot set {sorted(unknown)}")
        if fields.get("cert_serial") is not None:
            fields["cert_serial"] = serial_hex(fields["cert_serial"])
        if "notify_state" in fields:
            fields["notify_state"] = NotifyState(fields["notify_state"])
        if fields.get("fail_info") is not None and fields["fail_info"] not in _FAIL_INFOS:
            raise ValueError(f"fail_info {fields['fail_info']} is not a SCEP failInfo (0..4)")
        async with self._engine.begin() as connection:
            return await self._compare_and_set(
                connection,
                transaction_id=transaction_id,
                column="state",
                source=source,
                target=target,
                detail=detail,
                values=fields,
            )

    async def transition_notify(
        self,
        *,
        transaction_id: str,
        from_state: NotifyState,
        to_state: NotifyState,
        detail: str,
    ) -> RequestView | None:
        """Compare-and-set on `notify_state` (NONE -> SENT | DEAD | NOT_REQUIRED, DEAD -> SENT)."""
        source, target = NotifyState(from_state), NotifyState(to_state)
        if target not in ALLOWED_NOTIFY_TRANSITIONS[source]:
            raise IllegalTransition(source, target, kind="notify")
        async with self._engine.begin() as connection:
            return await self._compare_and_set(
                connection,
                transaction_id=transaction_id,
                column="notify_state",
                source=source,
                target=target,
                detail=detail,
                values={},
            )

    async def issue_certificate(
        self,
        *,
        transaction_id: str,
        certificate: IssuedCertificateRecord,
        detail: str | None = None,
    ) -> RequestView | None:
        """VALIDATED -> SIGNED and the certificate row, together or not at all.

        None means the request was not in VALIDATED (a redelivered sign
        message) and nothing was stored. SerialCollision means the serial is
        taken; the request is left in VALIDATED for a retry with a new serial.
        """
        try:
            async with self._engine.begin() as connection:
                view = await self._compare_and_set(
                    connection,
                    transaction_id=transaction_id,
                    column="state",
                    source=RequestState.VALIDATED,
                    target=RequestState.SIGNED,
                    detail=detail or f"signed, serial {certificate.serial}",
                    values={"cert_serial": certificate.serial, "cert_der": certificate.der},
                )
                if view is None:
                    return None
                await connection.execute(
                    insert(IssuedCertificate.__table__).values(
                        serial=certificate.serial,
                        transaction_id=transaction_id,
                        issuer=certificate.issuer,
                        subject=certificate.subject,
                        not_before=certificate.not_before,
                        not_after=certificate.not_after,
                        der=certificate.der,
                    )
                )
        except IntegrityError as exc:
            # Only a taken serial is the signer's to fix; anything else is a bug.
            if await self.get_certificate(certificate.serial) is not None:
                raise SerialCollision(certificate.serial) from exc
            raise
        return view

    async def mark_queued(self, transaction_id: str) -> bool:
        """Note that the request was just handed to the pipeline (again).

        Sets `queued_at` and counts the hand-over in `attempts`, so a sweep can
        give up on a request it keeps re-queueing. False if there is no such request.
        """
        requests = ScepRequest.__table__
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(requests)
                .where(requests.c.transaction_id == transaction_id)
                .values(queued_at=self._clock(), attempts=requests.c.attempts + 1)
            )
            return bool(result.rowcount)

    async def find_stale(self, *, older_than: timedelta, limit: int) -> list[RequestView]:
        """Non-terminal requests not handed to the pipeline for `older_than`.

        A never-queued request counts from its creation, so the sweep does not
        race an ingress that is still publishing it. Oldest first.
        """
        cutoff = self._clock() - older_than
        last_seen = func.coalesce(ScepRequest.queued_at, ScepRequest.created_at)
        async with self._sessions() as session:
            rows = await session.scalars(
                select(ScepRequest)
                .where(
                    ScepRequest.state.in_(NON_TERMINAL_STATES),
                    ScepRequest.parked_at.is_(None),
                    last_seen < cutoff,
                )
                .order_by(last_seen, ScepRequest.id)
                .limit(limit)
            )
            return [request_view(row) for row in rows]

    async def parked(self, *, limit: int = 1000) -> list[RequestView]:
        """Requests waiting for an operator, oldest first."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(ScepRequest)
                .where(ScepRequest.parked_at.is_not(None))
                .order_by(ScepRequest.parked_at, ScepRequest.id)
                .limit(limit)
            )
            return [request_view(row) for row in rows]

    async def park(self, *, transaction_id: str, reason: str) -> bool:
        """Mark a request as waiting in a dead-letter queue; the sweep skips it."""
        return await self._set_parked(transaction_id, self._clock(), f"parked: {reason}")

    async def unpark(self, *, transaction_id: str, detail: str = "replayed") -> bool:
        """The operator replayed it: it is the pipeline's again."""
        return await self._set_parked(transaction_id, None, detail)

    async def _set_parked(self, transaction_id: str, at: datetime | None, detail: str) -> bool:
        async with self._sessions.begin() as session:
            row = await session.scalar(
                update(ScepRequest)
                .where(ScepRequest.transaction_id == transaction_id)
                .values(parked_at=at, updated_at=self._clock())
                .returning(ScepRequest)
                .execution_options(synchronize_session=False)
            )
            if row is None:
                return False
            session.add(
                RequestEvent(
                    request_id=row.id,
                    at=self._clock(),
                    kind="park" if at is not None else "unpark",
                    from_state=row.state.value,
                    to_state=row.state.value,
                    detail=detail,
                )
            )
            return True

    async def history(self, transaction_id: str) -> list[EventView]:
        """The request's events, oldest first; empty for an unknown id."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(RequestEvent)
                .join(ScepRequest, RequestEvent.request_id == ScepRequest.id)
                .where(ScepRequest.transaction_id == transaction_id)
                # Ids follow commit order on one request (its row lock serialises
                # writers); wall-clock times may not, if the clock stepped back.
                .order_by(RequestEvent.id)
            )
            return [
                EventView(
                    at=row.at,
                    kind=row.kind,
                    from_state=row.from_state,
                    to_state=row.to_state,
                    detail=row.detail,
                )
                for row in rows
            ]

    # -- internals ----------------------------------------------------------

    async def _compare_and_set(
        self,
        connection: AsyncConnection,
        *,
        transaction_id: str,
        column: str,
        source: RequestState | NotifyState,
        target: RequestState | NotifyState,
        detail: str,
        values: dict[str, Any],
    ) -> RequestView | None:
        now = self._clock()
        requests = ScepRequest.__table__
        result = await connection.execute(
            update(requests)
            .where(requests.c.transaction_id == transaction_id, requests.c[column] == source)
            .values(
                {
                    **values,
                    column: target,
                    "version": requests.c.version + 1,
                    "updated_at": now,
                }
            )
            .returning(*requests.c)
        )
        row = result.first()
        if row is None:
            return None
        await connection.execute(
            insert(RequestEvent.__table__).values(
                request_id=row.id,
                at=now,
                kind="state" if column == "state" else "notify",
                from_state=source.value,
                to_state=target.value,
                detail=detail,
            )
        )
        return request_view(row)  # type: ignore[arg-type]


def _check_transaction_id(transaction_id: str) -> None:
    if not transaction_id or len(transaction_id) > 255:
        raise ValueError("transaction_id must be 1 to 255 characters")

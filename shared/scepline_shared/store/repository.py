"""Requests: recording, the state machine, history and the sweep.

With `certificates.py` (which it extends) this is the only code that reads or
writes the state store. Every method is atomic. State changes are compare-and-set updates
(`WHERE state = :from_state`), so any number of workers may race on one
request: exactly one moves it, the others get None and treat the step as
already done. Results are frozen views; rows never leave this module.

Each change and its history event are written together in one round trip on
PostgreSQL (one transaction on SQLite); reads are one round trip. See `_sql.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Row, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from scepline_shared.store._convert import (
    CERTIFICATE_TABLE,
    EVENT_COLUMNS,
    EVENT_TABLE,
    JOURNAL_COLUMNS,
    JOURNAL_TABLE,
    REFUSAL_COLUMNS,
    REFUSAL_TABLE,
    REQUEST_COLUMNS,
    REQUEST_TABLE,
    event_view,
    journal_entry,
    refusal_view,
    request_view,
)
from scepline_shared.store._sql import Dependent, RequestChange, reusable
from scepline_shared.store.certificates import (
    CRL_REASON_SUPERSEDED,
    CRL_REASON_UNSPECIFIED,
    CertificateRepository,
    check_aware,
    check_key_id,
    utc_now,
)
from scepline_shared.store.challenges import ChallengeRepository
from scepline_shared.store.errors import IllegalTransition, SerialCollision, StoreError
from scepline_shared.store.models import (
    ALLOWED_NOTIFY_TRANSITIONS,
    ALLOWED_TRANSITIONS,
    DEFAULT_ENDPOINT,
    NON_TERMINAL_STATES,
    TERMINAL_STATES,
    Approval,
    JournalKind,
    NotifyState,
    RequestState,
)
from scepline_shared.store.store_key import CsrSealer
from scepline_shared.store.views import (
    EventView,
    IssuedCertificateRecord,
    RecordResult,
    RefusalView,
    RequestView,
    SignatureClaim,
    serial_hex,
)

__all__ = ["MESSAGE_TYPES", "REFUSALS_KEPT", "TRANSITION_FIELDS", "RequestRepository", "utc_now"]

# Refusals kept (`record_refusal`): about the latest this many, whatever comes in.
REFUSALS_KEPT = 1000
# Older refusals are deleted once per this many new ones: one statement per
# refusal, and the ring holds at most REFUSALS_KEPT + _TRIM_EVERY.
_TRIM_EVERY = 100
# Longest refusal reason stored (ours, but it may quote what the client sent).
_MAX_REASON = 1000

# SCEP messageType values that create a request: PKCSReq (19), RenewalReq (17).
MESSAGE_TYPES: frozenset[int] = frozenset({17, 19})

# Columns `transition` may set alongside the state.
TRANSITION_FIELDS: frozenset[str] = frozenset(
    {
        "fail_info",
        "fail_reason",
        "provider_code",
        "cert_serial",
        "cert_der",
        "notify_state",
        "approval",
    }
)

# SCEP failInfo: badAlg, badMessageCheck, badRequest, badTime, badCertId.
_FAIL_INFOS: frozenset[int] = frozenset(range(5))
_BAD_REQUEST = 2

# Statements are built once, with bound parameters (see `_sql.py`).
_REQ = REQUEST_TABLE.c
_GET = reusable(select(*REQUEST_COLUMNS).where(_REQ.transaction_id == bindparam("transaction_id")))
# What `record_request` sets; the other columns start out NULL.
_NEW_REQUEST_COLUMNS = (
    "transaction_id",
    "signer_key_id",
    "message_type",
    "csr_der",
    "signer_cert_der",
    "subject",
    "renewal_of_serial",
    "endpoint",
    "state",
    "notify_state",
    "attempts",
    "version",
    "created_at",
    "updated_at",
    "queued_at",
)
_MARK_QUEUED = reusable(
    update(REQUEST_TABLE)
    .where(_REQ.transaction_id == bindparam("where_transaction_id"))
    .values(queued_at=bindparam("set_queued_at"), attempts=_REQ.attempts + 1)
)
_REFUSAL = REFUSAL_TABLE.c
_RECORD_REFUSAL = reusable(
    insert(REFUSAL_TABLE)
    .values({c.name: bindparam(c.name) for c in REFUSAL_COLUMNS})
    .returning(_REFUSAL.id)
)
_TRIM_REFUSALS = reusable(delete(REFUSAL_TABLE).where(_REFUSAL.id <= bindparam("oldest_gone")))
# The history entry of a change; `from_state`/`to_state` are parameters unless given.
_EVENT_PARAMETERS = {
    "request_id": _REQ.id,
    "at": "event_at",
    "kind": "event_kind",
    "from_state": "event_from",
    "to_state": "event_to",
    "detail": "event_detail",
}
_CERT = CERTIFICATE_TABLE.c
# A certificate is the endpoint's whose request it was issued for.
_CERTIFICATE_ROW: Dependent = (
    CERTIFICATE_TABLE,
    {
        **{c.name: f"certificate_{c.name}" for c in CERTIFICATE_TABLE.c if c.name != "endpoint"},
        "endpoint": _REQ.endpoint,
    },
)
_JOURNAL_ROW: Dependent = (
    JOURNAL_TABLE,
    {
        **{c.name: f"journal_{c.name}" for c in JOURNAL_TABLE.c if c.name != "id"},
        "transaction_id": _REQ.transaction_id,
    },
)
# VALIDATED -> SIGNING with the claimed serial, unless a certificate (from before
# the journal, whose own uniqueness guards every later serial) already has it.
_CLAIM = RequestChange(
    update(REQUEST_TABLE)
    .where(
        _REQ.transaction_id == bindparam("where_transaction_id"),
        _REQ.state == bindparam("where_from"),
        ~select(_CERT.serial).where(_CERT.serial == bindparam("set_cert_serial")).exists(),
    )
    .values(
        state=bindparam("set_to"),
        cert_serial=bindparam("set_cert_serial"),
        version=_REQ.version + 1,
        updated_at=bindparam("set_updated_at"),
    )
    .returning(*REQUEST_COLUMNS),
    ((EVENT_TABLE, _EVENT_PARAMETERS), _JOURNAL_ROW),
)
# SIGNING -> SIGNED, only while the claim on this serial stands.
_RECORD_SIGNED = RequestChange(
    update(REQUEST_TABLE)
    .where(
        _REQ.transaction_id == bindparam("where_transaction_id"),
        _REQ.state == bindparam("where_from"),
        _REQ.cert_serial == bindparam("where_serial"),
    )
    .values(
        state=bindparam("set_to"),
        cert_der=bindparam("set_cert_der"),
        version=_REQ.version + 1,
        updated_at=bindparam("set_updated_at"),
    )
    .returning(*REQUEST_COLUMNS),
    ((EVENT_TABLE, _EVENT_PARAMETERS), _CERTIFICATE_ROW),
)


# Requests parked outside the pipeline: the sweep neither re-queues them nor
# counts them stale (an operator decides, or their approval time runs out).
_WAITING_FOR_AN_OPERATOR = frozenset({RequestState.AWAITING_APPROVAL})


class RequestRepository(ChallengeRepository, CertificateRepository):
    """Requests and their history, plus (inherited) certificates and CRLs.

    Built from one `async_sessionmaker` bound to an `AsyncEngine` and the
    store key's `sealer`: CSRs are stored sealed and handed out opened (see
    `store_key.py`). `clock` exists for tests and must return aware datetimes.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        sealer: CsrSealer,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__(sessions, clock=clock)
        self._sealer = sealer
        # INSERT ... ON CONFLICT DO NOTHING is spelled per dialect, hence built here.
        self._record = RequestChange(
            self._db.insert_unless_present(REQUEST_TABLE, "transaction_id")
            .values({name: bindparam(f"new_{name}") for name in _NEW_REQUEST_COLUMNS})
            .returning(*REQUEST_COLUMNS),
            ((EVENT_TABLE, _EVENT_PARAMETERS),),
        )

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
        endpoint: str = DEFAULT_ENDPOINT,
    ) -> RecordResult:
        """Store a new request in RECEIVED, or return the one already under this id.

        ``endpoint``: the SCEP endpoint it arrived at (its provider and profile
        decide it).

        Race-safe: of concurrent calls with one transaction id exactly one
        creates the row. The caller compares `signer_key_id` of an existing
        row with its own (a different key must not see someone else's request).

        `queued=True` records that the caller is about to hand the new request
        to the pipeline, as `mark_queued` right after would (`queued_at` now,
        `attempts` 1), in the same write. An existing request is left as it is.
        """
        _check_transaction_id(transaction_id)
        check_key_id(signer_key_id)
        if message_type not in MESSAGE_TYPES:
            raise ValueError(f"message_type {message_type} does not create a request")
        renewal = serial_hex(renewal_of_serial) if renewal_of_serial is not None else None

        now = self._clock()
        new = {
            "transaction_id": transaction_id,
            "signer_key_id": signer_key_id,
            "message_type": message_type,
            "csr_der": self._sealer.seal(csr_der, transaction_id),
            "signer_cert_der": signer_cert_der,
            "subject": subject,
            "renewal_of_serial": renewal,
            "endpoint": endpoint,
            "state": RequestState.RECEIVED,
            "notify_state": NotifyState.NONE,
            "attempts": 1 if queued else 0,
            "version": 1,
            "created_at": now,
            "updated_at": now,
            "queued_at": now if queued else None,
        }
        parameters = {
            **{f"new_{name}": value for name, value in new.items()},
            **_event(now, "state", None, RequestState.RECEIVED, "recorded"),
        }
        # Retransmissions are common: a duplicate id inserts nothing and raises nothing.
        # A second attempt covers a row that vanished between the insert and the read.
        for _ in range(2):
            row = await self._db.change_request(self._record, parameters)
            if row is not None:
                return RecordResult(request=request_view(row, self._sealer), created=True)
            existing = await self.get(transaction_id)
            if existing is not None:
                return RecordResult(request=existing, created=False)
        raise StoreError(f"request {transaction_id!r} conflicts on insert but cannot be read")

    async def get(self, transaction_id: str) -> RequestView | None:
        row = await self._db.fetch_one(_GET, {"transaction_id": transaction_id})
        return None if row is None else request_view(row, self._sealer)

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
        if RequestState.SIGNING in (source, target):
            # Each has its dedicated method, which keeps the journal and the
            # certificate rows in step with the state.
            raise IllegalTransition(
                source,
                target,
                hint="use claim_signature, record_signed, void_claim or fail_and_revoke",
            )
        unknown = set(fields) - TRANSITION_FIELDS
        if unknown:
            raise TypeError(f"transition cannot set {sorted(unknown)}")
        if fields.get("cert_serial") is not None:
            fields["cert_serial"] = serial_hex(fields["cert_serial"])
        if "notify_state" in fields:
            fields["notify_state"] = NotifyState(fields["notify_state"])
        if fields.get("fail_info") is not None and fields["fail_info"] not in _FAIL_INFOS:
            raise ValueError(f"fail_info {fields['fail_info']} is not a SCEP failInfo (0..4)")
        return await self._compare_and_set(
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
        return await self._compare_and_set(
            transaction_id=transaction_id,
            column="notify_state",
            source=source,
            target=target,
            detail=detail,
            values={},
        )

    async def claim_signature(
        self, *, transaction_id: str, claim: SignatureClaim
    ) -> RequestView | None:
        """VALIDATED -> SIGNING, and the claim's issuance-journal entry, together.

        Commit this before the CA key is used: a signer that dies afterwards
        leaves a claim (`void_claim` resolves it), never a signature nobody
        recorded. None: the request was not in VALIDATED (a redelivery, or
        another signer holds it). SerialCollision: the serial is taken (by a
        journal entry or a certificate from before the journal); draw again.
        """
        parameters = {
            "where_transaction_id": transaction_id,
            "where_from": RequestState.VALIDATED,
            "set_to": RequestState.SIGNING,
            "set_cert_serial": claim.serial,
            "set_updated_at": (now := self._clock()),
            **_event(
                now,
                "state",
                RequestState.VALIDATED,
                RequestState.SIGNING,
                f"claimed serial {claim.serial} (TBS sha256 {claim.tbs_sha256})",
            ),
            **_journal_row(now, claim),
        }
        try:
            row = await self._db.change_request(_CLAIM, parameters)
        except IntegrityError as exc:
            raise SerialCollision(claim.serial) from exc
        if row is not None:
            return request_view(row, self._sealer)
        current = await self.get(transaction_id)
        if current is not None and current.state is RequestState.VALIDATED:
            raise SerialCollision(claim.serial)  # a certificate from before the journal has it
        return None

    async def record_signed(
        self,
        *,
        transaction_id: str,
        certificate: IssuedCertificateRecord,
        detail: str | None = None,
    ) -> RequestView | None:
        """SIGNING (claimed for this serial) -> SIGNED, and the certificate row,
        together. None: the claim is no longer this signer's (voided by a sweep
        after it took too long, or the request was given up); nothing is stored,
        and the serial is already revoked as voided."""
        now = self._clock()
        parameters = {
            "where_transaction_id": transaction_id,
            "where_from": RequestState.SIGNING,
            "where_serial": certificate.serial,
            "set_to": RequestState.SIGNED,
            "set_cert_der": certificate.der,
            "set_updated_at": now,
            **_event(
                now,
                "state",
                RequestState.SIGNING,
                RequestState.SIGNED,
                detail or f"signed, serial {certificate.serial}",
            ),
            **_certificate_row(transaction_id, certificate),
        }
        row = await self._db.change_request(_RECORD_SIGNED, parameters)
        return None if row is None else request_view(row, self._sealer)

    async def void_claim(
        self,
        *,
        transaction_id: str,
        serial: str,
        why: str,
        claimed_before: datetime | None = None,
        to_state: RequestState = RequestState.VALIDATED,
        **fields: Any,
    ) -> RequestView | None:
        """Give up a signing claim whose certificate was never stored: the
        serial becomes a voided certificate row, revoked (superseded), so the
        next CRL lists it, and the request goes back to VALIDATED (signed
        again under a new serial) or on to FAILED (``to_state``, with
        ``fields`` as for `transition`). ``claimed_before``: only a claim older
        than that (a signer that stopped answering). None, changing nothing,
        unless the request is in SIGNING under this serial."""
        key = serial_hex(serial)
        now = self._clock()
        conditions = [
            _REQ.transaction_id == transaction_id,
            _REQ.state == RequestState.SIGNING,
            _REQ.cert_serial == key,
        ]
        if claimed_before is not None:
            conditions.append(_REQ.updated_at < claimed_before)
        async with self._db.transaction() as connection:
            entry = (
                await connection.execute(
                    select(*JOURNAL_COLUMNS).where(
                        JOURNAL_TABLE.c.kind == JournalKind.CERTIFICATE,
                        JOURNAL_TABLE.c.serial == key,
                    )
                )
            ).first()
            if entry is None:
                raise StoreError(f"serial {key} is claimed but not in the issuance journal")
            claimed = journal_entry(entry)
            row = await _move(
                connection,
                conditions,
                source=RequestState.SIGNING,
                target=to_state,
                at=now,
                detail=f"{why}; serial {key} voided and revoked (superseded)",
                values={"cert_serial": None, **fields},
            )
            if row is None:
                return None
            await connection.execute(
                insert(CERTIFICATE_TABLE).values(
                    serial=key,
                    transaction_id=transaction_id,
                    issuer=claimed.issuer,
                    subject=claimed.subject,
                    not_before=claimed.not_before,
                    not_after=claimed.not_after,
                    der=None,
                    revoked_at=now,
                    revocation_reason=CRL_REASON_SUPERSEDED,
                    issuer_key_id=claimed.issuer_key_id,
                    endpoint=row.endpoint,
                )
            )
        return request_view(row, self._sealer)

    async def fail_and_revoke(
        self,
        *,
        transaction_id: str,
        from_state: RequestState,
        detail: str,
        reason: int = CRL_REASON_UNSPECIFIED,
        **fields: Any,
    ) -> RequestView | None:
        """`from_state` -> FAILED, and whatever certificate the request has can
        never count as valid, in one transaction: a signed, unreleased
        certificate (SIGNED) is revoked with ``reason``; a claimed serial
        (SIGNING) is voided. ``fields`` as for `transition`. None if the
        request is not in `from_state`."""
        source = RequestState(from_state)
        if RequestState.FAILED not in ALLOWED_TRANSITIONS[source]:
            raise IllegalTransition(source, RequestState.FAILED)
        current = await self.get(transaction_id)
        if current is None or current.state is not source:
            return None
        if source is RequestState.SIGNING and current.cert_serial is not None:
            return await self.void_claim(
                transaction_id=transaction_id,
                serial=current.cert_serial,
                why=detail,
                to_state=RequestState.FAILED,
                **fields,
            )
        unknown = set(fields) - TRANSITION_FIELDS
        if unknown:
            raise TypeError(f"fail_and_revoke cannot set {sorted(unknown)}")
        now = self._clock()
        async with self._db.transaction() as connection:
            row = await _move(
                connection,
                [_REQ.transaction_id == transaction_id, _REQ.state == source],
                source=source,
                target=RequestState.FAILED,
                at=now,
                detail=detail,
                values=fields,
            )
            if row is None:
                return None
            if row.cert_serial is not None:
                await connection.execute(
                    update(CERTIFICATE_TABLE)
                    .where(_CERT.serial == row.cert_serial, _CERT.revoked_at.is_(None))
                    .values(revoked_at=now, revocation_reason=reason)
                )
        return request_view(row, self._sealer)

    async def mark_queued(self, transaction_id: str) -> bool:
        """Note that the request was just handed to the pipeline (again).

        Sets `queued_at` and counts the hand-over in `attempts`, so a sweep can
        give up on a request it keeps re-queueing. False if there is no such request.
        """
        touched = await self._db.rowcount(
            _MARK_QUEUED,
            {"where_transaction_id": transaction_id, "set_queued_at": self._clock()},
        )
        return bool(touched)

    async def find_stale(self, *, older_than: timedelta, limit: int) -> list[RequestView]:
        """Non-terminal requests not handed to the pipeline for `older_than`.

        A never-queued request counts from its creation, so the sweep does not
        race an ingress that is still publishing it. Oldest first.
        """
        cutoff = self._clock() - older_than
        last_seen = func.coalesce(_REQ.queued_at, _REQ.created_at)
        rows = await self._db.fetch_all(
            select(*REQUEST_COLUMNS)
            .where(
                _REQ.state.in_(NON_TERMINAL_STATES - _WAITING_FOR_AN_OPERATOR),
                _REQ.parked_at.is_(None),
                last_seen < cutoff,
            )
            .order_by(last_seen, _REQ.id)
            .limit(limit)
        )
        return [request_view(row, self._sealer) for row in rows]

    async def prune(self, *, untouched_since: datetime) -> int:
        """Delete final requests (their history goes with them) untouched since
        `untouched_since`, except those parked for an operator; how many.

        Issued certificates are a separate table and stay: CRLs, GetCert and
        renewals need them. A device that repeats a pruned request is a new
        request (validated again).
        """
        check_aware("untouched_since", untouched_since)
        return await self._db.rowcount(
            delete(REQUEST_TABLE).where(
                _REQ.state.in_(TERMINAL_STATES),
                _REQ.parked_at.is_(None),
                _REQ.updated_at < untouched_since,
            )
        )

    async def in_state(
        self, state: RequestState, *, limit: int = 50, endpoint: str | None = None
    ) -> list[RequestView]:
        """Requests in `state` (at `endpoint`, if given), most recently changed
        first (`scepline request list`)."""
        statement = (
            select(*REQUEST_COLUMNS)
            .where(_REQ.state == state)
            .order_by(_REQ.updated_at.desc(), _REQ.id.desc())
            .limit(limit)
        )
        if endpoint is not None:
            statement = statement.where(_REQ.endpoint == endpoint)
        rows = await self._db.fetch_all(statement)
        return [request_view(row, self._sealer) for row in rows]

    async def count_awaiting_approval(self, endpoint: str) -> int:
        """How many requests of `endpoint` wait for an operator now."""
        row = await self._db.fetch_one(
            select(func.count()).where(
                _REQ.state == RequestState.AWAITING_APPROVAL, _REQ.endpoint == endpoint
            )
        )
        return int(row[0]) if row is not None else 0

    async def by_client_transaction(self, transaction_id: str) -> list[RequestView]:
        """The requests a client's transactionID names: the one stored under it
        and those whose key adds a renewal or endpoint suffix (``request_key``)."""
        escaped = _like_escaped(transaction_id)
        rows = await self._db.fetch_all(
            select(*REQUEST_COLUMNS)
            .where(
                (_REQ.transaction_id == transaction_id)
                | _REQ.transaction_id.like(f"{escaped}|%", escape="\\")
            )
            .order_by(_REQ.updated_at.desc(), _REQ.id.desc())
            .limit(20)
        )
        return [request_view(row, self._sealer) for row in rows]

    async def decide_approval(
        self, *, transaction_id: str, approve: bool, by: str, reason: str | None = None
    ) -> RequestView | None:
        """An operator's decision on a request AWAITING_APPROVAL: VALIDATED
        (approval ``operator``; not yet queued, so the sweep hands it to the sign
        step at once) or FAILED (failInfo badRequest with the reason). Who
        decided is in the history with the time. None unless it was awaiting."""
        if approve:
            detail = f"approved by {by}" + (f": {reason}" if reason else "") + " (operator)"
            values: dict[str, Any] = {"approval": Approval.OPERATOR, "queued_at": None}
            target = RequestState.VALIDATED
        else:
            why = reason or "rejected by an operator"
            detail = f"rejected by {by}: {why}"
            values = {"fail_info": _BAD_REQUEST, "fail_reason": why}
            target = RequestState.FAILED
        return await self._compare_and_set(
            transaction_id=transaction_id,
            column="state",
            source=RequestState.AWAITING_APPROVAL,
            target=target,
            detail=detail,
            values=values,
        )

    async def expire_unapproved(
        self, *, endpoint: str, waited: timedelta, limit: int = 500
    ) -> list[RequestView]:
        """Requests of `endpoint` AWAITING_APPROVAL for longer than `waited`
        (since they started waiting) end FAILED; those it ended."""
        cutoff = self._clock() - waited
        rows = await self._db.fetch_all(
            select(_REQ.transaction_id)
            .where(
                _REQ.state == RequestState.AWAITING_APPROVAL,
                _REQ.endpoint == endpoint,
                _REQ.updated_at < cutoff,
            )
            .order_by(_REQ.updated_at, _REQ.id)
            .limit(limit)
        )
        why = f"not approved within {waited.total_seconds() / 3600:g} h"
        ended = []
        for (transaction_id,) in rows:
            moved = await self._compare_and_set(
                transaction_id=transaction_id,
                column="state",
                source=RequestState.AWAITING_APPROVAL,
                target=RequestState.FAILED,
                detail=f"expired: {why}",
                values={"fail_info": _BAD_REQUEST, "fail_reason": why},
            )
            if moved is not None:
                ended.append(moved)
        return ended

    async def approved_unqueued(self, *, limit: int = 500) -> list[RequestView]:
        """Requests an operator approved that nobody handed to the sign step yet
        (`decide_approval` leaves `queued_at` empty): the sweep's at once."""
        rows = await self._db.fetch_all(
            select(*REQUEST_COLUMNS)
            .where(
                _REQ.state == RequestState.VALIDATED,
                _REQ.approval == Approval.OPERATOR,
                _REQ.queued_at.is_(None),
                _REQ.parked_at.is_(None),
            )
            .order_by(_REQ.updated_at, _REQ.id)
            .limit(limit)
        )
        return [request_view(row, self._sealer) for row in rows]

    async def recent(self, *, limit: int = 50) -> list[RequestView]:
        """The most recently changed requests, whatever their state (one indexed
        read per state, merged)."""
        found: list[RequestView] = []
        for state in RequestState:
            found += await self.in_state(state, limit=limit)
        found.sort(key=lambda request: (request.updated_at, request.id), reverse=True)
        return found[:limit]

    async def note(self, *, transaction_id: str, detail: str, kind: str = "operator") -> bool:
        """Add an entry to a request's history without changing it (who revoked
        its certificate, say); False if there is no such request."""
        async with self._db.transaction() as connection:
            row = (
                await connection.execute(
                    select(_REQ.id, _REQ.state).where(_REQ.transaction_id == transaction_id)
                )
            ).first()
            if row is None:
                return False
            await connection.execute(
                insert(EVENT_TABLE).values(
                    request_id=row.id,
                    at=self._clock(),
                    kind=kind,
                    from_state=str(row.state),
                    to_state=str(row.state),
                    detail=detail,
                )
            )
        return True

    async def parked(self, *, limit: int = 1000) -> list[RequestView]:
        """Requests waiting for an operator, oldest first."""
        rows = await self._db.fetch_all(
            select(*REQUEST_COLUMNS)
            .where(_REQ.parked_at.is_not(None))
            .order_by(_REQ.parked_at, _REQ.id)
            .limit(limit)
        )
        return [request_view(row, self._sealer) for row in rows]

    async def unfinished(self, transaction_ids: Collection[str]) -> set[str]:
        """Those of `transaction_ids` whose request still needs the pipeline or
        an operator: not final, or parked. The others are final and unparked,
        or gone (pruned): a dead letter of theirs needs nobody."""
        if not transaction_ids:
            return set()
        rows = await self._db.fetch_all(
            select(_REQ.transaction_id).where(
                _REQ.transaction_id.in_(list(transaction_ids)),
                _REQ.state.in_(NON_TERMINAL_STATES) | _REQ.parked_at.is_not(None),
            )
        )
        return {row.transaction_id for row in rows}

    async def park(self, *, transaction_id: str, reason: str) -> bool:
        """Mark a request as waiting in a dead-letter queue; the sweep skips it."""
        return await self._set_parked(transaction_id, self._clock(), f"parked: {reason}")

    async def unpark(
        self, *, transaction_id: str, detail: str = "replayed", requeued: bool = False
    ) -> bool:
        """The operator replayed it: it is the pipeline's again. ``requeued``:
        the caller hands it to its step right now (a broker replay), so it counts
        as queued now and the sweep does not queue it a second time."""
        return await self._set_parked(transaction_id, None, detail, requeued=requeued)

    async def _set_parked(
        self, transaction_id: str, at: datetime | None, detail: str, *, requeued: bool = False
    ) -> bool:
        now = self._clock()
        row = await self._db.change_request(
            _park_change(requeued),
            {
                "where_transaction_id": transaction_id,
                "set_parked_at": at,
                "set_updated_at": now,
                "event_at": now,
                "event_kind": "park" if at is not None else "unpark",
                "event_detail": detail,
            },
        )
        return row is not None

    async def history(self, transaction_id: str) -> list[EventView]:
        """The request's events, oldest first; empty for an unknown id."""
        rows = await self._db.fetch_all(
            select(*EVENT_COLUMNS)
            .join(REQUEST_TABLE, EVENT_TABLE.c.request_id == _REQ.id)
            .where(_REQ.transaction_id == transaction_id)
            # Ids follow commit order on one request (its row lock serialises
            # writers); wall-clock times may not, if the clock stepped back.
            .order_by(EVENT_TABLE.c.id)
        )
        return [event_view(row) for row in rows]

    # -- refusals ------------------------------------------------------------

    async def record_refusal(
        self, *, transaction_id: str, message_type: int | None, fail_info: int, reason: str
    ) -> None:
        """Remember a request refused before it was recorded, for `request show`.

        A bounded ring: every `_TRIM_EVERY` refusals the ones older than the
        latest `REFUSALS_KEPT` are deleted, so a flood costs a fixed amount of
        storage and, per refusal, one insert.
        """
        row = await self._db.fetch_one(
            _RECORD_REFUSAL,
            {
                "at": self._clock(),
                "transaction_id": transaction_id[:255],
                "message_type": message_type,
                "fail_info": fail_info,
                "reason": reason[:_MAX_REASON],
            },
        )
        assert row is not None
        refusal_id = int(row[0])
        if refusal_id % _TRIM_EVERY == 0:
            await self._db.rowcount(_TRIM_REFUSALS, {"oldest_gone": refusal_id - REFUSALS_KEPT})

    async def refusals(self, transaction_id: str, *, limit: int = 10) -> list[RefusalView]:
        """The latest refusals of this transaction id, newest first."""
        rows = await self._db.fetch_all(
            select(*REFUSAL_COLUMNS)
            .where(_REFUSAL.transaction_id == transaction_id)
            .order_by(_REFUSAL.id.desc())
            .limit(limit)
        )
        return [refusal_view(row) for row in rows]

    # -- internals ----------------------------------------------------------

    async def _compare_and_set(
        self,
        *,
        transaction_id: str,
        column: str,
        source: RequestState | NotifyState,
        target: RequestState | NotifyState,
        detail: str,
        values: dict[str, Any],
        certificate: dict[str, Any] | None = None,
    ) -> RequestView | None:
        """`column`: `source` -> `target` plus `values`, with its event (and the
        certificate row, given as `certificate_*` parameters); None, writing
        nothing, unless the request is in `source`."""
        now = self._clock()
        parameters = {
            "where_transaction_id": transaction_id,
            "where_from": source,
            "set_to": target,
            "set_updated_at": now,
            **{f"set_{name}": value for name, value in values.items()},
            **_event(now, "state" if column == "state" else "notify", source, target, detail),
            **(certificate or {}),
        }
        change = _cas_change(column, frozenset(values), certificate is not None)
        row = await self._db.change_request(change, parameters)
        return None if row is None else request_view(row, self._sealer)


async def _move(
    connection: AsyncConnection,
    conditions: list[Any],
    *,
    source: RequestState,
    target: RequestState,
    at: datetime,
    detail: str,
    values: dict[str, Any],
) -> Row[Any] | None:
    """Inside a caller's transaction: the request matching ``conditions`` to
    ``target`` with ``values``, and its history event; the changed row or None."""
    row = (
        await connection.execute(
            update(REQUEST_TABLE)
            .where(*conditions)
            .values(state=target, version=_REQ.version + 1, updated_at=at, **values)
            .returning(*REQUEST_COLUMNS)
        )
    ).first()
    if row is not None:
        await connection.execute(
            insert(EVENT_TABLE).values(
                request_id=row.id,
                at=at,
                kind="state",
                from_state=source.value,
                to_state=target.value,
                detail=detail,
            )
        )
    return row


@cache
def _cas_change(column: str, fields: frozenset[str], certificate: bool) -> RequestChange:
    """The compare-and-set of `column`, also setting `fields` (one shape per combination)."""
    return RequestChange(
        update(REQUEST_TABLE)
        .where(
            _REQ.transaction_id == bindparam("where_transaction_id"),
            _REQ[column] == bindparam("where_from"),
        )
        .values(
            {
                **{name: bindparam(f"set_{name}") for name in sorted(fields)},
                column: bindparam("set_to"),
                "version": _REQ.version + 1,
                "updated_at": bindparam("set_updated_at"),
            }
        )
        .returning(*REQUEST_COLUMNS),
        ((EVENT_TABLE, _EVENT_PARAMETERS), *([_CERTIFICATE_ROW] if certificate else [])),
    )


@cache
def _park_change(requeued: bool) -> RequestChange:
    """Set or clear `parked_at` (with ``requeued``, `queued_at` too); the state
    does not change, the event records it on both sides."""
    values = {"parked_at": bindparam("set_parked_at"), "updated_at": bindparam("set_updated_at")}
    if requeued:
        values["queued_at"] = bindparam("set_updated_at")
    return RequestChange(
        update(REQUEST_TABLE)
        .where(_REQ.transaction_id == bindparam("where_transaction_id"))
        .values(values)
        .returning(*REQUEST_COLUMNS),
        ((EVENT_TABLE, {**_EVENT_PARAMETERS, "from_state": _REQ.state, "to_state": _REQ.state}),),
    )


def _event(
    at: datetime,
    kind: str,
    from_state: RequestState | NotifyState | None,
    to_state: RequestState | NotifyState,
    detail: str,
) -> dict[str, Any]:
    """Parameters of a change's `request_event` row (states are plain strings there)."""
    return {
        "event_at": at,
        "event_kind": kind,
        "event_from": None if from_state is None else from_state.value,
        "event_to": to_state.value,
        "event_detail": detail,
    }


def _journal_row(at: datetime, claim: SignatureClaim) -> dict[str, Any]:
    """Parameters of a certificate claim's `issuance_journal` row."""
    return {
        "journal_at": at,
        "journal_kind": JournalKind.CERTIFICATE,
        "journal_issuer_key_id": claim.issuer_key_id,
        "journal_issuer": claim.issuer,
        "journal_serial": claim.serial,
        "journal_tbs_sha256": claim.tbs_sha256,
        "journal_subject": claim.subject,
        "journal_not_before": claim.not_before,
        "journal_not_after": claim.not_after,
    }


def _certificate_row(transaction_id: str, certificate: IssuedCertificateRecord) -> dict[str, Any]:
    """Parameters of a `certificate` row stored with the request's change."""
    return {
        "certificate_serial": certificate.serial,
        "certificate_transaction_id": transaction_id,
        "certificate_issuer": certificate.issuer,
        "certificate_subject": certificate.subject,
        "certificate_not_before": certificate.not_before,
        "certificate_not_after": certificate.not_after,
        "certificate_der": certificate.der,
        "certificate_revoked_at": None,
        "certificate_revocation_reason": None,
        "certificate_issuer_key_id": certificate.issuer_key_id,
        "certificate_renews_serial": certificate.renews_serial,
    }


def _like_escaped(text: str) -> str:
    """``text`` as a literal inside a LIKE pattern (escape character: backslash)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _check_transaction_id(transaction_id: str) -> None:
    if not transaction_id or len(transaction_id) > 255:
        raise ValueError("transaction_id must be 1 to 255 characters")

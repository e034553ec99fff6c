"""The OCSP responder: which CA a request names, what the store says, a signed answer.

Answers (RFC 6960, RFC 5019 profile):

- ``good`` / ``revoked`` (time and reason) for certificates the store holds;
  a voided serial (claimed, never stored) is revoked, as on the CRL;
- ``unknown`` for a serial this CA never issued;
- the CA certificates themselves, asked about under a CA of ours that issued
  them (a self-signed CA under itself), are ``good``;
- ``unauthorized`` for an issuer we do not serve, ``malformedRequest`` for
  anything that is not a request we can read, ``tryLater`` while a
  generation's responder certificate is not there yet or the store is down
  with nothing cached.

Responses are cached per process and signed ahead: a request without a nonce
is answered from the cache while its statuses are fresh, that is read from the
store less than one check interval ago (``SCEPLINE_CRL_CHECK_INTERVAL_SECONDS``),
so a revocation shows within one interval; the response is signed again when its
status changed or half of its validity has passed. Nobody waits for those
re-reads while the answers are in use: an answer served in the second half of
its interval starts, in the background, one query that re-reads every answer
served since its last check (not one query per answer: a thousand devices asking
every few seconds would otherwise keep the store busy, and the requests whose
answers fell due would all wait for it); an answer whose status changed is
dropped and signed again when next asked for. Reads a request does wait for
(a question new to this process, an answer not asked for in a whole interval)
share one query with every other read that arrives while one is running. While
the store is unreachable, a cached response still within its nextUpdate is
served. A request with a nonce gets its own signature (the nonce is inside it).

A request seen before byte for byte (relying parties repeat theirs) finds its
cached response without being parsed again: the same bytes ask the same question.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from scepline_shared.keys import KeyPair, SigningKey, spki_sha256_hex
from scepline_shared.log import get_logger
from scepline_shared.metrics import OCSP_CACHE, OCSP_RESPONSES, OCSP_SIGNING_SECONDS
from scepline_shared.ocsp.codec import (
    HASH_ALGORITHMS,
    CertId,
    CertStatus,
    MalformedRequest,
    ResponseStatus,
    SingleAnswer,
    error_response,
    issuer_hashes,
    parse_request,
    successful_response,
)
from scepline_shared.revocation import SUPERSEDED
from scepline_shared.store.views import CertificateStatusView, serial_hex

__all__ = [
    "CertificateStatuses",
    "OcspAnswer",
    "OcspIssuer",
    "OcspResponder",
    "ocsp_issuer",
]

log = get_logger(__name__)

# Serials per query when statuses are read in one go.
_READ_CHUNK = 500


class CertificateStatuses(Protocol):
    """The store, as the responder reads it."""

    async def certificate_statuses(
        self, serials: list[str]
    ) -> dict[str, CertificateStatusView]: ...


class _SharedReads:
    """Status reads that arrive while one is running share the next query: under
    load the store sees one query at a time, however many requests wait on it."""

    def __init__(self, statuses: CertificateStatuses) -> None:
        self._statuses = statuses
        self._wanted: set[str] = set()
        self._next: asyncio.Future[dict[str, CertificateStatusView]] | None = None
        self._running: asyncio.Task[None] | None = None

    async def read(self, serials: Iterable[str]) -> Mapping[str, CertificateStatusView]:
        """The rows of ``serials`` (and of others read with them); raises what the
        store raised."""
        self._wanted.update(serials)
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        future = self._next
        if self._running is None:
            self._running = asyncio.create_task(self._run())
        return await asyncio.shield(future)  # a client gone cancels its wait, not the read

    async def _run(self) -> None:
        future: asyncio.Future[dict[str, CertificateStatusView]] | None = None
        try:
            while self._next is not None:
                future, self._next = self._next, None
                serials, self._wanted = sorted(self._wanted), set()
                try:
                    rows: dict[str, CertificateStatusView] = {}
                    for at in range(0, len(serials), _READ_CHUNK):
                        chunk = serials[at : at + _READ_CHUNK]
                        rows.update(await self._statuses.certificate_statuses(chunk))
                except Exception as error:  # noqa: BLE001 - handed to every waiter
                    future.set_exception(error)
                    future.exception()  # retrieved: nobody may be waiting any more
                else:
                    future.set_result(rows)
        finally:
            self._running = None
            for left in (future, self._next):  # cancelled (shut down) mid-read
                if left is not None and not left.done():
                    left.cancel()


@dataclass(frozen=True)
class OcspIssuer:
    """One CA we answer for: its certificate, the key that signs for it (a
    delegated responder or the CA itself; None until the signer issued the
    responder) and the certificates of ours it issued outside the store (the
    CA certificates, answered good)."""

    ca: x509.Certificate
    signer: KeyPair | None
    delegated: bool
    ca_certificates: frozenset[int] = frozenset()
    key_id: str = field(init=False)
    hashes: Mapping[str, tuple[bytes, bytes]] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_id", spki_sha256_hex(self.ca.public_key()))
        object.__setattr__(
            self, "hashes", {alg: issuer_hashes(self.ca, alg) for alg in HASH_ALGORITHMS}
        )


def ocsp_issuer(
    ca: x509.Certificate,
    *,
    responder: KeyPair | None,
    ca_key: KeyPair | None,
    signing: str,
    our_ca_certificates: Sequence[x509.Certificate],
) -> OcspIssuer:
    """The :class:`OcspIssuer` for ``ca``: signed by its delegated ``responder``
    (``signing="delegated"``) or by ``ca_key`` (``"ca"``); the certificates in
    ``our_ca_certificates`` that ``ca`` issued are answered good."""
    issued = frozenset(
        certificate.serial_number
        for certificate in our_ca_certificates
        if certificate.issuer == ca.subject and _issued_by(certificate, ca)
    )
    if signing == "ca":
        return OcspIssuer(ca=ca, signer=ca_key, delegated=False, ca_certificates=issued)
    return OcspIssuer(ca=ca, signer=responder, delegated=True, ca_certificates=issued)


def _issued_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(ca)
    except Exception:  # noqa: BLE001 - any failure means "not issued by this CA"
        return False
    return True


@dataclass(frozen=True, slots=True)
class OcspAnswer:
    """What the HTTP layer sends: the DER body and, for a cacheable (nonce-less,
    successful) answer, the times its caching headers come from."""

    body: bytes
    status: ResponseStatus
    this_update: datetime | None = None
    next_update: datetime | None = None
    etag: str | None = None


@dataclass(frozen=True, slots=True)
class _Status:
    status: CertStatus
    revoked_at: datetime | None = None
    reason: int | None = None


@dataclass(slots=True)
class _Cached:
    answer: OcspAnswer
    statuses: tuple[_Status, ...]
    checked: float  # monotonic time the statuses were last read from the store
    refresh_at: datetime  # re-sign from then on (half of the validity)
    issuer: OcspIssuer
    cert_ids: tuple[CertId, ...]
    # The issuers (as ``issuers()`` returned them) the request was last found
    # under: a request known by its bytes skips the issuer lookup while they stand.
    issuers: Sequence[OcspIssuer] | None = None
    used: bool = False  # served since its statuses were last read


class OcspResponder:
    """Answers DER OCSP requests for the issuers ``issuers()`` returns now (a CA
    rollover or a renewed responder certificate is picked up on the next call)."""

    def __init__(
        self,
        statuses: CertificateStatuses,
        issuers: Callable[[], Sequence[OcspIssuer]],
        *,
        check_interval: timedelta,
        response_validity: timedelta,
        cache_entries: int = 100_000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sign_off_loop: Callable[[SigningKey], bool] = lambda _key: False,
    ) -> None:
        self._issuers = issuers
        self._check_seconds = check_interval.total_seconds()
        self._validity = response_validity
        self._cache_entries = cache_entries
        self._clock = clock
        self._off_loop = sign_off_loop
        self._cache: OrderedDict[tuple[bytes, ...], _Cached] = OrderedDict()
        self._index_source: Sequence[OcspIssuer] | None = None
        self._index: dict[tuple[str, bytes, bytes], OcspIssuer] = {}
        self._inflight: dict[tuple[bytes, ...], asyncio.Future[OcspAnswer]] = {}
        # Nonce-less requests seen before, by their DER: their cache key.
        self._known: dict[bytes, tuple[bytes, ...]] = {}
        self._reads = _SharedReads(statuses)
        self._checking_ahead: asyncio.Task[None] | None = None
        self._checked_ahead = float("-inf")  # monotonic start of the last one

    @property
    def cached_responses(self) -> int:
        """Signed responses kept for requests without a nonce (at most ``cache_entries``)."""
        return len(self._cache)

    async def respond(self, der: bytes) -> OcspAnswer:
        """The answer to one request; never raises for anything the client sent."""
        key = self._known.get(der)
        if key is not None:
            cached = self._cache.get(key)
            if (
                cached is not None
                and cached.issuers is not None
                and cached.issuers is self._issuers()
                and self._fresh(cached)
            ):
                return self._hit(key, cached)
        try:
            request = parse_request(der)
        except MalformedRequest as refused:
            log.info("OCSP request refused", reason=str(refused))
            return _error(ResponseStatus.MALFORMED_REQUEST)
        issuer = self._issuer_of(request.cert_ids)
        found_under = self._index_source  # the issuers ``issuer`` was found among
        if issuer is None:
            return _error(ResponseStatus.UNAUTHORIZED)
        if issuer.signer is None:
            log.warning("no OCSP responder certificate yet", issuer_key_id=issuer.key_id)
            return _error(ResponseStatus.TRY_LATER)
        if request.nonce is not None:
            return await self._answer(issuer, request.cert_ids, request.nonce, cached=None)
        key = tuple(cert_id.der for cert_id in request.cert_ids)
        self._remember(der, key)
        cached = self._cache.get(key)
        if cached is not None and self._fresh(cached):
            cached.issuers = found_under
            return self._hit(key, cached)
        # One store read and one signature for a burst of the same question.
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[OcspAnswer] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            answer = await self._answer(
                issuer, request.cert_ids, None, cached=cached, found_under=found_under
            )
            future.set_result(answer)
            return answer
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            del self._inflight[key]

    def _hit(self, key: tuple[bytes, ...], cached: _Cached) -> OcspAnswer:
        cached.used = True
        self._cache.move_to_end(key)
        if time.monotonic() - cached.checked >= self._check_seconds / 2:
            self._check_ahead()
        OCSP_CACHE.labels("hit").inc()
        _count(cached.statuses)
        return cached.answer

    def _remember(self, der: bytes, key: tuple[bytes, ...]) -> None:
        """Know ``der`` by its cache key from now on (as many requests as responses
        are cached; the longest known forgotten first)."""
        if self._cache_entries <= 0 or der in self._known:
            return
        if len(self._known) >= self._cache_entries:
            del self._known[next(iter(self._known))]
        self._known[der] = key

    def _check_ahead(self) -> None:
        """Re-read in the background, in one go, the statuses of the cached answers
        served since their last check and checked a quarter of an interval ago or
        more; drop those whose status changed. One at a time, at most one per
        quarter interval: an answer in use is checked again within three quarters
        of an interval (and the time of one query), before it falls due."""
        started = time.monotonic()
        if self._checking_ahead is not None or started - self._checked_ahead < (
            self._check_seconds / 4
        ):
            return
        self._checked_ahead = started
        self._checking_ahead = asyncio.create_task(self._recheck(started))

    async def _recheck(self, started: float) -> None:
        try:
            due = [
                (key, entry)
                for key, entry in self._cache.items()
                if entry.used and started - entry.checked >= self._check_seconds / 4
            ]
            serials = {
                serial_hex(cert_id.serial)
                for _, entry in due
                for cert_id in entry.cert_ids
                if cert_id.serial not in entry.issuer.ca_certificates
            }
            try:
                rows = await self._reads.read(serials)
            except Exception:  # the answers fall due; requests then read for themselves
                log.warning("store unavailable: OCSP statuses not re-read", exc_info=True)
                return
            for key, entry in due:
                if self._cache.get(key) is not entry:
                    continue  # signed again meanwhile
                statuses = tuple(_status(entry.issuer, c.serial, rows) for c in entry.cert_ids)
                if statuses == entry.statuses:
                    entry.checked = started  # read after this moment: as fresh as that
                    entry.used = False
                else:
                    del self._cache[key]  # signed again when next asked for
        finally:
            self._checking_ahead = None

    def _unavailable(self, cached: _Cached | None) -> OcspAnswer:
        """The answer while the store is down: a cached one still within its
        nextUpdate, else tryLater."""
        now = self._clock()
        if cached is not None and cached.answer.next_update and now < cached.answer.next_update:
            log.warning("store unavailable: serving a cached OCSP response")
            OCSP_CACHE.labels("stale").inc()
            _count(cached.statuses)
            return cached.answer
        log.error("store unavailable: OCSP answered tryLater")
        return _error(ResponseStatus.TRY_LATER)

    def _fresh(self, cached: _Cached) -> bool:
        return (
            time.monotonic() - cached.checked < self._check_seconds
            and self._clock() < cached.refresh_at
        )

    def _issuer_of(self, cert_ids: Sequence[CertId]) -> OcspIssuer | None:
        """The one issuer all CertIDs name, or None (one of them is not ours, or
        they name several CAs: one response has one signer)."""
        issuers = self._issuers()
        if issuers is not self._index_source:
            self._index = {
                (algorithm, name_hash, key_hash): issuer
                for issuer in issuers
                for algorithm, (name_hash, key_hash) in issuer.hashes.items()
            }
            self._index_source = issuers
        found: OcspIssuer | None = None
        for cert_id in cert_ids:
            issuer = self._index.get(
                (cert_id.hash_algorithm, cert_id.issuer_name_hash, cert_id.issuer_key_hash)
            )
            if issuer is None or (found is not None and issuer is not found):
                return None
            found = issuer
        return found

    async def _answer(
        self,
        issuer: OcspIssuer,
        cert_ids: Sequence[CertId],
        nonce: bytes | None,
        *,
        cached: _Cached | None,
        found_under: Sequence[OcspIssuer] | None = None,
    ) -> OcspAnswer:
        reading = time.monotonic()
        try:
            statuses = await self._read_statuses(issuer, cert_ids)
        except Exception:  # a store outage is answered, not raised
            log.warning("store unavailable: OCSP statuses not read", exc_info=True)
            return self._unavailable(cached)
        now = self._clock()
        if cached is not None and cached.statuses == statuses and now < cached.refresh_at:
            cached.checked = reading
            cached.used = False
            cached.issuers = found_under
            OCSP_CACHE.labels("revalidated").inc()
            _count(statuses)
            return cached.answer
        answer = await self._sign(issuer, cert_ids, statuses, nonce, now)
        OCSP_CACHE.labels("signed").inc()
        _count(statuses)
        if nonce is None and self._cache_entries > 0:
            key = tuple(cert_id.der for cert_id in cert_ids)
            assert answer.this_update is not None
            self._cache[key] = _Cached(
                answer=answer,
                statuses=statuses,
                checked=reading,
                refresh_at=answer.this_update + self._validity / 2,
                issuer=issuer,
                cert_ids=tuple(cert_ids),
                issuers=found_under,
            )
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_entries:
                self._cache.popitem(last=False)
        return answer

    async def _read_statuses(
        self, issuer: OcspIssuer, cert_ids: Sequence[CertId]
    ) -> tuple[_Status, ...]:
        wanted = [
            cert_id.serial for cert_id in cert_ids if cert_id.serial not in issuer.ca_certificates
        ]
        rows = await self._reads.read({serial_hex(serial) for serial in wanted})
        return tuple(_status(issuer, cert_id.serial, rows) for cert_id in cert_ids)

    async def _sign(
        self,
        issuer: OcspIssuer,
        cert_ids: Sequence[CertId],
        statuses: Sequence[_Status],
        nonce: bytes | None,
        now: datetime,
    ) -> OcspAnswer:
        signer = issuer.signer
        assert signer is not None
        this_update = now.replace(microsecond=0)
        next_update = this_update + self._validity
        answers = [
            SingleAnswer(
                cert_id=cert_id,
                status=status.status,
                this_update=this_update,
                next_update=next_update,
                revoked_at=status.revoked_at,
                reason=status.reason,
            )
            for cert_id, status in zip(cert_ids, statuses, strict=True)
        ]

        def build() -> bytes:
            return successful_response(
                answers,
                responder=signer.certificate,
                signature_algorithm=_signature_algorithm(signer.key),
                sign=lambda data: _timed_sign(signer.key, data),
                produced_at=this_update,
                nonce=nonce,
                include_responder_certificate=issuer.delegated,
            )

        body = await asyncio.to_thread(build) if self._off_loop(signer.key) else build()
        if nonce is not None:
            return OcspAnswer(body=body, status=ResponseStatus.SUCCESSFUL)
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return OcspAnswer(
            body=body,
            status=ResponseStatus.SUCCESSFUL,
            this_update=this_update,
            next_update=next_update,
            etag=etag,
        )


def _status(issuer: OcspIssuer, serial: int, rows: Mapping[str, CertificateStatusView]) -> _Status:
    if serial in issuer.ca_certificates:
        return _Status(CertStatus.GOOD)
    view = rows.get(serial_hex(serial))
    if view is None or not _same_issuer(view, issuer):
        return _Status(CertStatus.UNKNOWN)
    if view.revoked_at is not None:
        reason = view.revocation_reason
        if reason is None and view.voided:
            reason = SUPERSEDED
        return _Status(CertStatus.REVOKED, view.revoked_at, reason)
    if view.voided:  # a voided serial is always revoked; never "good"
        return _Status(CertStatus.REVOKED, view.not_before, SUPERSEDED)
    return _Status(CertStatus.GOOD)


def _same_issuer(view: CertificateStatusView, issuer: OcspIssuer) -> bool:
    if view.issuer_key_id is not None:
        return view.issuer_key_id == issuer.key_id
    # Rows from before the key id was kept: the issuer's name (generations of a
    # CA may share it; those rows predate rollovers in practice).
    return view.issuer == issuer.ca.subject.rfc4514_string()


def _signature_algorithm(key: SigningKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "sha256_rsa"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "sha256_ecdsa"
    raise TypeError(f"OCSP signing keys are RSA or EC, not {type(key).__name__}")


def _timed_sign(key: SigningKey, data: bytes) -> bytes:
    started = time.perf_counter()
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
    OCSP_SIGNING_SECONDS.observe(time.perf_counter() - started)
    return signature


def _error(status: ResponseStatus) -> OcspAnswer:
    OCSP_RESPONSES.labels(status.name.lower()).inc()
    return OcspAnswer(body=error_response(status), status=status)


def _count(statuses: Sequence[_Status]) -> None:
    for status in statuses:
        OCSP_RESPONSES.labels(status.status.name.lower()).inc()

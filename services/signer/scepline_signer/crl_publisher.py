"""Publish each CA's CRL into the store when one is due (the signer runs this).

Ingress serves the latest stored CRL for GetCRL and at the CRL distribution
point, so publishing is a store write: several signer processes may run the
publisher at once; the store's unique (issuer key, number) decides who wins and
the others skip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Literal, Protocol, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from scepline_shared.ca._common import SIGNATURE_HASH, require_aware_utc
from scepline_shared.ca.crl import crl_builder
from scepline_shared.ca.tbs import tbs_sha256, tbs_sha256_of
from scepline_shared.keys import KeyPair, spki_sha256_hex
from scepline_shared.log import get_logger
from scepline_shared.metrics import CRL_NEXT_UPDATE, CRL_PUBLISH_ERRORS, CRL_PUBLISHED
from scepline_shared.periodic import repeat_until_stopped
from scepline_shared.settings import Settings
from scepline_shared.store.errors import CrlNumberCollision
from scepline_shared.store.models import JournalKind
from scepline_shared.store.views import CertificateView, CrlView

from .ports import CrlStore

__all__ = [
    "CrlPublisher",
    "OffLoop",
    "PublishReason",
    "crl_due",
    "publish_crl_if_due",
]

log = get_logger(__name__)

_T = TypeVar("_T")

PublishReason = Literal["initial", "revocation", "refresh", "forced"]

# CRL numbers taken by other CAs' CRLs tried in a row before giving up for this round.
_NUMBER_ATTEMPTS = 8

# Relying parties reject a CRL whose thisUpdate is in their future ("CRL is not
# yet valid"); a little backdating absorbs their clock skew, as for certificates.
_BACKDATE = timedelta(minutes=5)


class OffLoop(Protocol):
    """Runs a blocking callable away from the event loop (``asyncio.to_thread``-like)."""

    def __call__(self, function: Callable[[], _T], /) -> Awaitable[_T]: ...


def _to_thread(function: Callable[[], _T]) -> Awaitable[_T]:
    return asyncio.to_thread(function)


def crl_due(
    latest: x509.CertificateRevocationList | None,
    revoked: Iterable[CertificateView],
    now: datetime,
    *,
    force: bool = False,
) -> PublishReason | None:
    """Why a new CRL is due, or None.

    "revocation": a revoked certificate of the CA is missing from the latest CRL.
    That covers every revocation newer than its thisUpdate and also one committed
    while that CRL was being built or recorded with an earlier date; comparing
    revocation times with thisUpdate would miss those. "refresh": more than half
    of the latest CRL's validity has passed, so relying parties never hold an
    expired one.
    """
    if force:
        return "forced"
    if latest is None:
        return "initial"
    listed = {entry.serial_number for entry in latest}
    if any(int(view.serial, 16) not in listed for view in revoked):
        return "revocation"
    this_update = latest.last_update_utc
    next_update = latest.next_update_utc
    if next_update is None or now >= this_update + (next_update - this_update) / 2:
        return "refresh"
    return None


async def publish_crl_if_due(
    repository: CrlStore,
    ca: KeyPair,
    *,
    validity: timedelta,
    now: datetime | None = None,
    force: bool = False,
    sign: OffLoop = _to_thread,
    min_number: int = 1,
) -> CrlView | None:
    """Publish ``ca``'s next CRL if one is due (see :func:`crl_due`); the stored view,
    or None when nothing was due or a concurrent publisher stored it first.

    The CRL lists every revoked certificate ``ca`` issued, with its reason code,
    until it has been listed once after the certificate expired.
    Its number is the CA's latest + 1 (1 for the first), or ``min_number`` if
    higher. The store keeps CRL numbers unique across all CAs, so a number taken
    by another CA (after a rollover) is skipped: the next one is tried, which
    keeps this CA's numbers increasing. A number taken by this CA meanwhile means
    another signer published; then this one stops. ``sign`` runs the CPU- and
    HSM-bound parts (parsing the latest CRL, building and signing) off the loop.
    """
    if validity <= timedelta(0):
        raise ValueError(f"CRL validity must be positive, got {validity}")
    at = require_aware_utc(now, "now") if now is not None else datetime.now(UTC)
    if at >= ca.certificate.not_valid_after_utc:
        return None  # nobody can validate against an expired CA; its CRL is moot
    issuer_key_id = spki_sha256_hex(ca.certificate.public_key())
    latest = await repository.latest_crl(issuer_key_id)
    if latest is not None:
        CRL_NEXT_UPDATE.labels(issuer_key_id).set(latest.next_update.timestamp())
    # RFC 5280 §3.3: an entry may leave the CRL once it has appeared on one CRL
    # issued after the certificate expired. The rule used, which stays true once
    # true: leave out what expired before the latest CRL's thisUpdate. That CRL
    # was built while the one before it predated the expiry, so it listed the
    # entry. CRLs then do not grow with every device ever retired or wiped.
    candidates = await repository.revoked(
        ca.certificate.subject.rfc4514_string(),
        expiring_from=None if latest is None else latest.this_update,
    )

    def decide() -> tuple[PublishReason, list[CertificateView]] | None:
        previous = None if latest is None else x509.load_der_x509_crl(latest.der)
        revoked = _issued_by(ca, candidates)
        reason = crl_due(previous, revoked, at, force=force)
        return None if reason is None else (reason, revoked)

    decided = await sign(decide)
    if decided is None:
        return None
    reason, revoked = decided
    this_update = at.replace(microsecond=0) - _BACKDATE
    entries = [(int(v.serial, 16), _revoked_at(v), v.revocation_reason) for v in revoked]
    number = max(1 if latest is None else latest.number + 1, min_number)
    issuer = ca.certificate.subject.rfc4514_string()
    next_update = this_update + _BACKDATE + validity
    for _ in range(_NUMBER_ATTEMPTS):
        builder = crl_builder(
            ca=ca,
            revoked=entries,
            number=number,
            this_update=this_update,
            next_update=next_update,
        )
        tbs = await sign(partial(tbs_sha256, builder, ca.key))
        # The journal entry takes the number before the key signs: a publisher
        # that dies after it leaves an entry (unpublished), never an unknown CRL.
        if not await repository.claim_crl_number(
            number=number,
            issuer_key_id=issuer_key_id,
            issuer=issuer,
            this_update=this_update,
            next_update=next_update,
            tbs_sha256=tbs,
        ):
            holder = await repository.journal_entry(JournalKind.CRL, number)
            if holder is not None and holder.issuer_key_id == issuer_key_id:
                # Another signer is publishing this CA's CRL now; it is as new
                # as ours would be, and anything it lacks is due next round.
                log.info(
                    "CRL published concurrently by another signer; skipped",
                    issuer_key_id=issuer_key_id,
                    number=number,
                )
                return None
            number += 1  # taken by another CA's CRL
            continue
        crl = await sign(partial(builder.sign, ca.key, SIGNATURE_HASH))
        if tbs_sha256_of(crl) != tbs:
            raise RuntimeError(f"CRL {number}: the signed TBSCertList is not the journaled one")
        try:
            view = await repository.store_crl(
                number=number,
                issuer_key_id=issuer_key_id,
                this_update=this_update,
                next_update=next_update,
                der=crl.public_bytes(Encoding.DER),
            )
        except CrlNumberCollision:
            number += 1  # a CRL from before the journal has it: journaled, unpublished
            continue
        break
    else:
        raise CrlNumberCollision(number)
    CRL_PUBLISHED.labels(reason).inc()
    CRL_NEXT_UPDATE.labels(issuer_key_id).set(view.next_update.timestamp())
    log.info(
        "CRL published",
        issuer=ca.certificate.subject.rfc4514_string(),
        issuer_key_id=issuer_key_id,
        number=number,
        entries=len(entries),
        reason=reason,
        next_update=view.next_update.isoformat(),
    )
    return view


def _number_or_zero(view: CrlView | None) -> int:
    return 0 if view is None else view.number


def _issued_by(ca: KeyPair, candidates: list[CertificateView]) -> list[CertificateView]:
    """The certificates ``ca`` itself issued among those recorded under its name.

    The store keys issuers by name, and CA generations after a rollover usually
    share one; the AKI (which issue_certificate copies from the CA's SKI) tells
    them apart. A certificate without an AKI is kept: it can only be ours.
    """
    ours = _key_identifier(ca.certificate)
    ours_id = spki_sha256_hex(ca.certificate.public_key())
    kept: list[CertificateView] = []
    for view in candidates:
        if view.issuer_key_id is not None:  # recorded since the journal: no parsing
            if view.issuer_key_id == ours_id:
                kept.append(view)
            continue
        assert view.der is not None  # voided rows always carry their issuer key id
        certificate = x509.load_der_x509_certificate(view.der)
        try:
            aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        except x509.ExtensionNotFound:
            kept.append(view)
            continue
        if aki.value.key_identifier in (None, ours):
            kept.append(view)
    return kept


def _key_identifier(certificate: x509.Certificate) -> bytes:
    try:
        return certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest  # type: ignore[arg-type]


def _revoked_at(view: CertificateView) -> datetime:
    assert view.revoked_at is not None  # repository.revoked returns revoked rows only
    return view.revoked_at


@dataclass
class CrlPublisher:
    """Checks every ``interval`` seconds whether each CA's CRL is due, and publishes it.

    ``cas`` is called each round, so the CA set follows a rollover: the
    integrator passes the active and previous CAs of the current CA schedule
    (previous CAs keep signing CRLs for the certificates they issued). Errors
    are logged and counted, and the CA is retried next round: a database or HSM
    outage must not end the signer process.
    """

    repository: CrlStore
    cas: Callable[[], Iterable[KeyPair]]
    validity: timedelta
    interval: float = 60.0
    sign: OffLoop = _to_thread

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError(f"interval must be positive, got {self.interval}")
        if self.validity <= timedelta(0):
            raise ValueError(f"validity must be positive, got {self.validity}")
        self._stopped = asyncio.Event()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        repository: CrlStore,
        cas: Callable[[], Iterable[KeyPair]],
        *,
        sign: OffLoop = _to_thread,
    ) -> CrlPublisher:
        return cls(
            repository=repository,
            cas=cas,
            validity=timedelta(hours=settings.crl_validity_hours),
            interval=settings.crl_check_interval_seconds,
            sign=sign,
        )

    async def run(self) -> None:
        """Publish what is due now and then every ``interval`` until :meth:`stop`."""
        await repeat_until_stopped(
            self._stopped, self.interval, self.run_once, failure="CRL publishing round failed"
        )

    def stop(self) -> None:
        self._stopped.set()

    async def run_once(self, *, now: datetime | None = None) -> list[CrlView]:
        """One round over the CAs; the CRLs this round published."""
        try:
            cas = list(self.cas())
        except Exception:
            CRL_PUBLISH_ERRORS.inc()
            log.exception("CRL publisher could not get the CA set; retrying next round")
            return []
        published: list[CrlView] = []
        unique = {spki_sha256_hex(ca.certificate.public_key()): ca for ca in cas}
        try:
            # Numbers are unique across CAs in the store: starting above every
            # CA's latest avoids colliding (and signing again) after a rollover.
            floor = 1 + max(
                [_number_or_zero(await self.repository.latest_crl(key)) for key in unique],
                default=0,
            )
        except Exception:
            CRL_PUBLISH_ERRORS.inc()
            log.exception("CRL publisher could not read the latest CRLs; retrying next round")
            return []
        for key_id, ca in unique.items():
            try:
                view = await publish_crl_if_due(
                    self.repository,
                    ca,
                    validity=self.validity,
                    now=now,
                    sign=self.sign,
                    min_number=floor,
                )
            except Exception:
                CRL_PUBLISH_ERRORS.inc()
                log.exception(
                    "CRL publishing failed; retrying next round",
                    issuer=ca.certificate.subject.rfc4514_string(),
                    issuer_key_id=key_id,
                )
                continue
            if view is not None:
                published.append(view)
                floor = view.number + 1
        return published

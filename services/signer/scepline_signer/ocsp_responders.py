"""Issue and renew each CA generation's delegated OCSP responder certificate.

The signer holds the CA key, so it is the one that signs responder
certificates; responders (ingress, ``scepline ocsp``, ``scepline up``) only read
``ocsp.crt`` and the responder key (see
:mod:`scepline_shared.ca.ocsp_responder`). Each round, for every generation of
the CA schedule that is still valid, under the exclusive CA lock (several
signers may run this at once; the second finds the work done):

1. the responder key is made if missing (a file, or in the token like the RA's);
2. if there is no certificate for it, or half of its life has passed, a new
   one is prepared, **journaled**, signed by the CA key, checked against the
   journaled TBS hash and written.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from scepline_shared.ca import CaSchedule
from scepline_shared.ca.issue import new_serial
from scepline_shared.ca.keysource import KeySource
from scepline_shared.ca.material import CaPaths, load_certificate, locked
from scepline_shared.ca.ocsp_responder import (
    ensure_responder_key,
    prepare_responder_certificate,
    responder_renewal_due,
    save_responder_certificate,
)
from scepline_shared.ca.schedule import CaGeneration
from scepline_shared.ca.tbs import tbs_sha256_of
from scepline_shared.keys import spki_sha256_hex
from scepline_shared.log import get_logger
from scepline_shared.metrics import OCSP_RESPONDER_NOT_AFTER
from scepline_shared.periodic import repeat_until_stopped
from scepline_shared.store.models import JournalKind

from .ports import JournalsCaCertificates

__all__ = ["OcspResponderKeeper"]

log = get_logger(__name__)


@dataclass
class OcspResponderKeeper:
    """Keeps every valid generation's responder certificate fresh, every ``interval`` s."""

    repository: JournalsCaCertificates
    data_dir: Path
    keys: KeySource
    schedule: Callable[[], CaSchedule]
    validity: timedelta
    interval: float = 60.0

    def __post_init__(self) -> None:
        self._stopped = asyncio.Event()
        # Per generation, the responder certificate this keeper last found (or
        # made) valid for its key and CA, with the state of the files behind it:
        # while they are unchanged and less than half of its life has gone, a
        # round needs neither the lock nor the key (a key removed or replaced
        # changes the files, and the next round makes it good again).
        self._checked: dict[int, tuple[x509.Certificate, _Files]] = {}

    async def run(self) -> None:
        await repeat_until_stopped(
            self._stopped,
            self.interval,
            self.run_once,
            failure="OCSP responder certificate round failed",
        )

    def stop(self) -> None:
        self._stopped.set()

    async def run_once(self, *, now: datetime | None = None) -> list[x509.Certificate]:
        """One round; the responder certificates it issued."""
        moment = now or datetime.now(UTC)
        issued: list[x509.Certificate] = []
        for generation in self.schedule().generations:
            ca = generation.material.ca.certificate
            if ca.not_valid_after_utc <= moment:
                continue  # an expired CA answers for nothing any more
            certificate = await self._keep(generation, moment)
            if certificate is not None:
                issued.append(certificate)
        return issued

    async def _keep(self, generation: CaGeneration, now: datetime) -> x509.Certificate | None:
        paths = CaPaths.generation(self.data_dir, generation.number)
        ca = generation.material.ca
        checked = self._checked.get(generation.number)
        if checked is not None and _unchanged_and_fresh(paths, *checked, now):
            return None
        async with _exclusive(paths):
            key = await asyncio.to_thread(
                ensure_responder_key, paths, self.keys, generation=generation.number, ca=ca
            )
            current = load_certificate(paths.ocsp_cert) if paths.ocsp_cert.exists() else None
            if not responder_renewal_due(
                current, ca=ca.certificate, public_key=key.public_key(), now=now
            ):
                assert current is not None
                _export(ca.certificate, current)
                self._checked[generation.number] = (current, _files(paths))
                return None
            prepared = prepare_responder_certificate(
                ca, key.public_key(), serial=new_serial(), now=now, validity=self.validity
            )
            # Journaled before the CA key is used, like every signature of it.
            await self.repository.journal_ca_certificate(
                kind=JournalKind.OCSP_CERTIFICATE,
                issuer_key_id=spki_sha256_hex(ca.certificate.public_key()),
                issuer=ca.certificate.subject.rfc4514_string(),
                serial=prepared.serial,
                subject=prepared.subject.rfc4514_string(),
                not_before=prepared.not_before,
                not_after=prepared.not_after,
                tbs_sha256=prepared.tbs_sha256,
            )
            certificate = await asyncio.to_thread(prepared.sign, ca)
            if tbs_sha256_of(certificate) != prepared.tbs_sha256:
                raise RuntimeError("the signed responder certificate is not the journaled one")
            await asyncio.to_thread(save_responder_certificate, paths, certificate)
            self._checked[generation.number] = (certificate, _files(paths))
        _export(ca.certificate, certificate)
        log.info(
            "OCSP responder certificate issued",
            generation=generation.number,
            serial=f"{certificate.serial_number:x}",
            not_after=certificate.not_valid_after_utc.isoformat(),
        )
        return certificate


_Files = tuple[tuple[int, int] | None, ...]


def _files(paths: CaPaths) -> _Files:
    """(mtime, size) of the responder's certificate, key file and key index."""
    found: list[tuple[int, int] | None] = []
    for path in (paths.ocsp_cert, paths.ocsp_key, paths.keys_index):
        try:
            stat = path.stat()
        except FileNotFoundError:
            found.append(None)
        else:
            found.append((stat.st_mtime_ns, stat.st_size))
    return tuple(found)


def _unchanged_and_fresh(
    paths: CaPaths, checked: x509.Certificate, files: _Files, now: datetime
) -> bool:
    start, end = checked.not_valid_before_utc, checked.not_valid_after_utc
    return now < start + (end - start) / 2 and _files(paths) == files


def _export(ca: x509.Certificate, responder: x509.Certificate) -> None:
    OCSP_RESPONDER_NOT_AFTER.labels(spki_sha256_hex(ca.public_key())).set(
        responder.not_valid_after_utc.timestamp()
    )


@contextlib.asynccontextmanager
async def _exclusive(paths: CaPaths) -> AsyncIterator[None]:
    """The exclusive CA lock, waited for off the loop and held across awaits."""
    lock = locked(paths, exclusive=True)
    await asyncio.to_thread(lock.__enter__)
    try:
        yield
    finally:
        lock.__exit__(None, None, None)

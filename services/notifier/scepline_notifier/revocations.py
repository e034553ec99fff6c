"""Intune's revocation requests (docs/specs/intune-api.md, "Revocation requests"):
when a device is retired, wiped or leaves the SCEP profile's scope, Intune asks
the CA to revoke its certificate.

The notifier (the service that talks to Intune) downloads the pending requests
every ``SCEPLINE_INTUNE_REVOCATION_INTERVAL_SECONDS``, revokes each certificate
in the store and uploads the results; the signers' CRL publishers list it in
the next CRL. Requests come again until their results are uploaded, so every
step is idempotent: a certificate revoked already counts as done, whatever
round revoked it. Serial numbers are unique in the store (at least 64 random
bits), so the serial alone names the certificate. Requests are asked for per
issuer name, as the success notifications gave it (``issuingCertificateAuthority``):
a tenant may have other CAs, and their requests are not ours to answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from scepline_shared.ca.issue import parse_serial
from scepline_shared.intune import IntuneClient, IntuneError
from scepline_shared.intune.wire import RevocationError, RevocationRequest, RevocationResult
from scepline_shared.log import get_logger
from scepline_shared.metrics import INTUNE_REVOCATIONS
from scepline_shared.periodic import repeat_until_stopped
from scepline_shared.store.certificates import (
    CRL_REASON_CESSATION_OF_OPERATION,
)
from scepline_shared.store.views import CertificateView

from .ports import NotifierStore

__all__ = ["RevocationSync"]

log = get_logger(__name__)


class RevocationSync:
    def __init__(
        self,
        *,
        repository: NotifierStore,
        intune: IntuneClient,
        interval: float,
        batch: int = 100,
        endpoints: Collection[str] | None = None,
    ) -> None:
        """``endpoints``: the endpoints whose certificates this client's tenant
        may revoke (None: every one); another's serial is "not found" to it."""
        self._endpoints = None if endpoints is None else frozenset(endpoints)
        self._repository = repository
        self._intune = intune
        self._interval = interval
        self._batch = batch
        self._stopped = asyncio.Event()

    async def sync_once(self) -> list[RevocationResult]:
        """One round: for each issuer this CA has issued under, download its
        requests, revoke, upload. The results (uploaded, or resent with the
        next download if Intune did not take them)."""
        results: list[RevocationResult] = []
        for issuer in await self._repository.issuers():
            results += await self._sync_issuer(issuer)
        return results

    async def _sync_issuer(self, issuer: str) -> list[RevocationResult]:
        # Asked per issuer, as it was sent in the success notifications: a
        # tenant may have other CAs, whose requests are theirs to answer (a
        # "not found" from us would use them up).
        try:
            requests = await self._intune.download_revocation_requests(
                max_requests=self._batch, issuer_name=issuer
            )
        except IntuneError as error:
            log.warning("could not download Intune's revocation requests", error=error.message)
            return []
        results = [await self._revoke(request) for request in requests]
        if not results:
            return results
        try:
            accepted = await self._intune.upload_revocation_results(results)
        except IntuneError as error:
            accepted = False
            log.warning("could not upload revocation results", error=error.message)
        if accepted:
            log.info("revocation results uploaded to Intune", count=len(results))
        else:
            log.warning("Intune did not take the revocation results; resent next round")
        return results

    async def run(self) -> None:
        await repeat_until_stopped(
            self._stopped, self._interval, self.sync_once, failure="revocation sync failed"
        )

    def stop(self) -> None:
        self._stopped.set()

    async def _revoke(self, request: RevocationRequest) -> RevocationResult:
        serial = parse_serial(request.serial_number)
        if serial is None:
            return self._result(
                request,
                RevocationError.PARAMETER_DATA_INVALID,
                "invalid_serial",
                f"not a certificate serial number: {request.serial_number[:80]!r}",
            )
        known = await self._repository.get_certificate(serial)
        if (
            known is not None
            and self._endpoints is not None
            and known.endpoint not in self._endpoints
        ):
            known = None  # another tenant's certificate: not this tenant's to revoke
        if known is None:
            return self._result(
                request,
                RevocationError.CERTIFICATE_NOT_FOUND,
                "not_found",
                f"no certificate with serial {serial:x} was issued by this CA",
            )
        if known.is_revoked:
            return self._result(request, RevocationError.NONE, "already_revoked")
        revoked = await self._repository.revoke(serial, reason=CRL_REASON_CESSATION_OF_OPERATION)
        assert revoked is not None
        _log_revoked(request, revoked)
        return self._result(request, RevocationError.NONE, "revoked")

    @staticmethod
    def _result(
        request: RevocationRequest, error: RevocationError, outcome: str, message: str | None = None
    ) -> RevocationResult:
        INTUNE_REVOCATIONS.labels(outcome).inc()
        if message is not None:
            log.warning("revocation request not carried out", reason=message)
        return RevocationResult(request.request_context, error, message)


def _log_revoked(request: RevocationRequest, certificate: CertificateView) -> None:
    log.info(
        "certificate revoked at Intune's request",
        serial=certificate.serial,
        subject=certificate.subject,
        transaction_id=certificate.transaction_id,
    )
    if request.issuer_name and request.issuer_name != certificate.issuer:
        log.warning(
            "Intune named another issuer for this serial; revoked by serial",
            serial=certificate.serial,
            intune_issuer=request.issuer_name[:200],
        )

"""The Intune client: validateRequest and the two notifications (ScepActions),
and the revocation requests Intune sends the CA (PkiConnectorFEService).

One instance per process (it owns the token cache, the discovery cache and the
HTTP connection pool); share it between the validator and the notifier. Each
call: discover the service's URI (cached), get an Intune token (cached), POST
with bounded retries; on 401/403/404, or on 5xx/network failure if Graph then
names another URI, rediscover once and try again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from ..log import get_logger
from ..metrics import INTUNE_LATENCY
from ..settings import Settings
from . import wire
from .config import PKI_API_VERSION, PKI_SERVICE, SCEP_SERVICE, IntuneConfig
from .discovery import ServiceLocator
from .errors import (
    IntuneConfigurationError,
    IntuneError,
    IntuneProtocolError,
    IntuneResult,
    IntuneUnavailable,
)
from .tokens import TokenSource
from .transport import Exchange, RetriesExhausted, Transport

__all__ = ["IntuneCall", "IntuneClient"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class IntuneCall:
    """One call to Intune as an observer hears of it (the console's Intune status)."""

    call: str
    outcome: str  # success, rejected, unavailable, configuration_error, protocol_error
    at: datetime
    seconds: float
    error: str | None  # what went wrong, for anything but success and rejected


class IntuneClient:
    def __init__(self, config: IntuneConfig) -> None:
        self.config = config
        self._transport = Transport(config)
        self._tokens = TokenSource(config)
        self._locator = ServiceLocator(config, self._tokens, self._transport)
        self._observers: list[Callable[[IntuneCall], None]] = []

    def observe(self, observer: Callable[[IntuneCall], None]) -> None:
        """Call ``observer`` after every call (on the event loop; it must not block)."""
        self._observers.append(observer)

    def _observed(self, call: str, outcome: str, seconds: float, error: str | None) -> None:
        INTUNE_LATENCY.labels(call, outcome).observe(seconds)
        if not self._observers:
            return
        record = IntuneCall(call, outcome, datetime.now(UTC), seconds, error)
        for observer in self._observers:
            try:
                observer(record)
            except Exception:
                log.exception("intune call observer failed")

    @classmethod
    def from_settings(cls, settings: Settings) -> IntuneClient:
        return cls(IntuneConfig.from_settings(settings))

    async def aclose(self) -> None:
        await self._transport.aclose()
        await asyncio.to_thread(self._tokens.close)

    async def __aenter__(self) -> IntuneClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def validate_request(self, *, transaction_id: str, csr_der: bytes) -> IntuneResult:
        body = wire.validate_body(
            transaction_id=transaction_id, csr_der=csr_der, caller_info=self.config.caller_info
        )
        return await self._scep_action("validateRequest", body, transaction_id)

    async def success_notification(
        self, *, transaction_id: str, csr_der: bytes, certificate: x509.Certificate
    ) -> IntuneResult:
        body = wire.success_body(
            transaction_id=transaction_id,
            csr_der=csr_der,
            certificate=certificate,
            caller_info=self.config.caller_info,
        )
        return await self._scep_action("successNotification", body, transaction_id)

    async def failure_notification(
        self, *, transaction_id: str, csr_der: bytes, hresult: int, error_description: str
    ) -> IntuneResult:
        body = wire.failure_body(
            transaction_id=transaction_id,
            csr_der=csr_der,
            hresult=hresult,
            description=error_description,
            caller_info=self.config.caller_info,
        )
        return await self._scep_action("failureNotification", body, transaction_id)

    async def download_revocation_requests(
        self, *, max_requests: int, issuer_name: str | None = None
    ) -> list[wire.RevocationRequest]:
        """Certificates Intune wants revoked; they come again until their results
        are uploaded."""
        body = wire.download_revocations_body(max_requests=max_requests, issuer_name=issuer_name)
        exchange = await self._pki_call("downloadRevocationRequests", body)
        return wire.parse_revocation_requests(exchange.response, exchange.activity_id)

    async def upload_revocation_results(self, results: list[wire.RevocationResult]) -> bool:
        """Report what became of each request; False if Intune did not take them."""
        body = wire.upload_revocation_results_body(results)
        exchange = await self._pki_call("uploadRevocationResults", body)
        return wire.parse_upload_accepted(exchange.response)

    async def _pki_call(self, action: str, body: Any) -> Exchange:
        started = time.perf_counter()
        outcome, failure = "error", None
        try:
            exchange = await self._post(
                PKI_SERVICE, f"CertificateAuthorityRequests/{action}", action, body, PKI_API_VERSION
            )
            outcome = "success"
            return exchange
        except IntuneError as error:
            outcome, failure = _outcome(error), error.message
            log.warning("intune call failed for good", call=action, error=error.message)
            raise
        finally:
            self._observed(action, outcome, time.perf_counter() - started, failure)

    async def _scep_action(self, action: str, body: Any, transaction_id: str) -> IntuneResult:
        started = time.perf_counter()
        outcome, failure = "error", None
        try:
            exchange = await self._post(
                SCEP_SERVICE, f"ScepActions/{action}", action, body, self.config.api_version
            )
            result = wire.parse_result(exchange.response, exchange.activity_id)
            outcome = "success" if result.ok else "rejected"
        except IntuneError as error:
            outcome, failure = _outcome(error), error.message
            log.warning(
                "intune call failed for good",
                call=action,
                error=error.message,
                activity_id=error.activity_id,
                scep_transaction_id=transaction_id,
            )
            raise
        finally:
            self._observed(action, outcome, time.perf_counter() - started, failure)
        log.info(
            "intune answered",
            call=action,
            code=result.code,
            description=result.error_description[:300],
            activity_id=result.activity_id,
            scep_transaction_id=transaction_id,
        )
        return result

    async def _post(
        self, service: str, path: str, action: str, body: Any, api_version: str
    ) -> Exchange:
        """POST ``body`` to ``<service URI>/<path>``: the 2xx exchange, or IntuneError."""
        deadline = self._transport.deadline()
        scope = self.config.intune_scope
        headers = {"api-version": api_version, "UserAgent": self.config.caller_info}
        for attempt in (1, 2):
            base = await self._locator.uri(service)
            token = await self._tokens.token(scope)
            try:
                exchange = await self._transport.send(
                    "POST",
                    f"{base}/{path}",
                    what=action,
                    token=token,
                    deadline=deadline,
                    body=body,
                    headers=headers,
                )
            except RetriesExhausted as exhausted:
                # A shard move can look like this (the old host gone from DNS): ask
                # Graph again, and try once more only if it now names another URI.
                if exhausted.status == 429:
                    raise  # throttled: the service is there, it wants us to wait
                self._locator.invalidate(base)
                if attempt == 2:
                    raise
                try:
                    moved = await self._locator.uri(service) != base
                except IntuneError:
                    raise exhausted from None
                if not moved:
                    raise
                continue
            status = exchange.status
            if 200 <= status < 300:
                self._locator.confirm(base)
                return exchange
            if status in (401, 403):
                # An expired or revoked token, or the app lacks the role: retry once
                # with a new token (and a fresh look at where Intune is).
                self._tokens.forget(scope)
                self._locator.invalidate()
                if attempt == 1:
                    continue
                raise IntuneConfigurationError(
                    f"Intune refused the app's token on {action} (HTTP {status} "
                    f"{_fe_error(exchange)}): grant the Intune application permission "
                    "scep_challenge_provider with admin consent, in the tenant that issued "
                    "the challenges",
                    activity_id=exchange.activity_id,
                )
            if status == 404:
                self._locator.invalidate(base)  # the old shard after a move
                if attempt == 1:
                    continue
                raise IntuneUnavailable(
                    f"{action}: HTTP 404 at the rediscovered URI", activity_id=exchange.activity_id
                )
            if status >= 500:
                raise IntuneUnavailable(
                    f"{action}: HTTP {status}", activity_id=exchange.activity_id
                )
            raise IntuneProtocolError(
                f"Intune refused {action}: HTTP {status} {_fe_error(exchange)}",
                activity_id=exchange.activity_id,
            )
        raise AssertionError("unreachable")


def _outcome(error: IntuneError) -> str:
    if isinstance(error, IntuneUnavailable):
        return "unavailable"
    if isinstance(error, IntuneConfigurationError):
        return "configuration_error"
    return "protocol_error"


def _fe_error(exchange: Exchange) -> str:
    """The OData error's code and the first words of its message, for operators."""
    try:
        error = exchange.response.json()["error"]
        return f"{error.get('code', '')}: {str(error.get('message', ''))[:200]}"
    except (ValueError, KeyError, TypeError, AttributeError):
        return exchange.response.text[:200]

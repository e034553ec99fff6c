"""Where this tenant's Intune service lives: Microsoft Graph discovery, cached.

The ScepRequestValidationFEService host is per tenant and sharded, so it is
looked up in the endpoints of Intune's service principal
(docs/specs/intune-api.md, "Service discovery") and kept for a TTL (30 min by
default). Callers ``invalidate`` it when a call hints the service moved (404,
401, 5xx, network error); the URI that failed is then avoided while Graph
lists another for the same service (stale duplicates).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from ..log import get_logger
from ..metrics import INTUNE_LATENCY
from .config import IntuneConfig
from .errors import IntuneConfigurationError, IntuneError, IntuneProtocolError, IntuneUnavailable
from .tokens import TokenSource
from .transport import Transport

__all__ = ["ServiceLocator"]

log = get_logger(__name__)


class ServiceLocator:
    def __init__(
        self,
        config: IntuneConfig,
        tokens: TokenSource,
        transport: Transport,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._tokens = tokens
        self._transport = transport
        self._clock = clock
        self._services: dict[str, list[str]] = {}
        self._expires_at = 0.0
        self._suspect: set[str] = set()
        self._lock = asyncio.Lock()

    async def uri(self, service: str) -> str:
        """The base URI of ``service`` (providerName), discovering it if needed."""
        async with self._lock:  # one discovery for any number of concurrent callers
            if self._clock() >= self._expires_at:
                self._services = await self._discover()
                self._expires_at = self._clock() + self._config.discovery_ttl_seconds
            candidates = self._services.get(service.lower())
        if not candidates:
            self._expires_at = 0.0  # look again next time: an admin may be fixing it
            raise IntuneConfigurationError(
                f"Did not find service named '{service}' listed in Microsoft Graph discovery "
                "(missing Application.Read.All consent, or no Intune in the tenant)"
            )
        return next((uri for uri in candidates if uri not in self._suspect), candidates[0])

    def invalidate(self, failed_uri: str | None = None) -> None:
        """Rediscover on the next call; prefer another URI than ``failed_uri``."""
        self._expires_at = 0.0
        if failed_uri is not None:
            self._suspect.add(failed_uri)

    def confirm(self, uri: str) -> None:
        """``uri`` answered: it is fine again."""
        self._suspect.discard(uri)

    async def _discover(self) -> dict[str, list[str]]:
        started = time.perf_counter()
        outcome = "error"
        try:
            services = await self._fetch()
            outcome = "ok"
            return services
        except IntuneConfigurationError:
            outcome = "configuration_error"
            raise
        except IntuneUnavailable:
            outcome = "unavailable"
            raise
        finally:
            INTUNE_LATENCY.labels("discovery", outcome).observe(time.perf_counter() - started)

    async def _fetch(self) -> dict[str, list[str]]:
        scope, url = self._config.graph_scope, self._config.endpoints_url
        deadline = self._transport.deadline()
        for attempt in (1, 2):
            token = await self._tokens.token(scope)
            exchange = await self._transport.send(
                "GET", url, what="graph discovery", token=token, deadline=deadline
            )
            status = exchange.status
            if status == 200:
                services = _parse(_json(exchange))
                log.info(
                    "intune services discovered",
                    services=sorted(services),
                    activity_id=exchange.activity_id,
                )
                return services
            if status == 401 and attempt == 1:
                self._tokens.forget(scope)  # expired or revoked: one more try, new token
                continue
            raise _error(status, _graph_error(exchange), exchange.activity_id)
        raise AssertionError("unreachable")


def _json(exchange: Any) -> Any:
    try:
        return exchange.response.json()
    except ValueError:
        return None


def _parse(body: Any) -> dict[str, list[str]]:
    if not isinstance(body, dict) or not isinstance(body.get("value"), list):
        raise IntuneProtocolError("Graph discovery answered without a 'value' list")
    services: dict[str, list[str]] = {}
    for entry in body["value"]:
        if not isinstance(entry, dict):
            continue
        name, uri = entry.get("providerName"), entry.get("uri")
        if isinstance(name, str) and isinstance(uri, str) and uri:
            # providerName is matched whole and case-insensitively; duplicates keep
            # Graph's order, distinct URIs only.
            uris = services.setdefault(name.lower(), [])
            if uri.rstrip("/") not in uris:
                uris.append(uri.rstrip("/"))
    return services


def _graph_error(exchange: Any) -> str:
    try:
        error = exchange.response.json()["error"]
        return f"{error.get('code', '')}: {str(error.get('message', ''))[:200]}"
    except (ValueError, KeyError, TypeError, AttributeError):
        return exchange.response.text[:200]


def _error(status: int, detail: str, activity_id: str) -> IntuneError:
    if status == 403:
        return IntuneConfigurationError(
            f"Graph refused to list Intune's endpoints (403 {detail}): grant the app the "
            "Microsoft Graph application permission Application.Read.All with admin consent",
            activity_id=activity_id,
        )
    if status in (401, 404):
        return IntuneConfigurationError(
            f"Graph discovery failed ({status} {detail}): check the tenant, the Graph URL and "
            "SCEPLINE_INTUNE_GRAPH_RESOURCE_URL",
            activity_id=activity_id,
        )
    return IntuneProtocolError(f"Graph discovery: HTTP {status} {detail}", activity_id=activity_id)

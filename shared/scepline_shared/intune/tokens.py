"""App-only access tokens from Entra ID through one MSAL confidential client.

One ``ConfidentialClientApplication`` lives as long as the client, so MSAL's
token cache serves every call until a token is near expiry (the Java reference
client rebuilds it per call and caches nothing). MSAL is synchronous and its
constructor already talks to the authority (OIDC discovery), so both run in a
worker thread; the app is built on first use and rebuilt only if that failed.
One asyncio lock per scope makes concurrent first calls share one token request.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from typing import Any

import msal
import requests

from ..log import get_logger
from ..metrics import INTUNE_LATENCY
from .config import IntuneConfig
from .errors import IntuneConfigurationError, IntuneUnavailable

__all__ = ["TokenSource"]

log = get_logger(__name__)

# OAuth errors that mean "later"; every other error code means our setup is wrong.
_TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error", "slow_down"})


class TokenSource:
    def __init__(self, config: IntuneConfig) -> None:
        self._config = config
        self._app: msal.ConfidentialClientApplication | None = None
        self._cache = msal.TokenCache()
        self._build_lock = threading.Lock()
        self._scope_locks: dict[str, asyncio.Lock] = {}

    async def token(self, scope: str) -> str:
        lock = self._scope_locks.setdefault(scope, asyncio.Lock())
        async with lock:
            started = time.perf_counter()
            try:
                result = await asyncio.to_thread(self._acquire, scope)
            except (IntuneUnavailable, IntuneConfigurationError) as error:
                _observe(started, "configuration_error" if _is_config(error) else "unavailable")
                raise
            if "access_token" in result:
                if result.get("token_source") != "cache":  # only real round trips count
                    _observe(started, "ok")
                return str(result["access_token"])
            refused = _classify(result, scope)
            _observe(started, "configuration_error" if _is_config(refused) else "unavailable")
            raise refused

    def forget(self, scope: str) -> None:
        """Drop cached tokens for ``scope`` (a resource refused one: get a new one)."""
        for entry in list(self._cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
            if scope.lower() in entry.get("target", "").lower().split():
                self._cache.remove_at(entry)

    def close(self) -> None:
        with self._build_lock:
            if self._app is not None:
                self._app.http_client.close()
                self._app = None

    # -- in the worker thread -------------------------------------------------------

    def _acquire(self, scope: str) -> dict[str, Any]:
        app = self._application()
        try:
            result = app.acquire_token_for_client(scopes=[scope])
        except (requests.RequestException, ValueError) as exc:
            # 5xx (raise_for_status), a non-JSON answer, or no connection at all.
            raise IntuneUnavailable(f"Entra token endpoint: {type(exc).__name__}") from exc
        return dict(result or {})

    def _application(self) -> msal.ConfidentialClientApplication:
        with self._build_lock:
            if self._app is None:
                self._app = self._build()
            return self._app

    def _build(self) -> msal.ConfidentialClientApplication:
        config = self._config
        session = requests.Session()
        if config.ca_bundle is not None:
            # REQUESTS_CA_BUNDLE would otherwise override `verify` (docs/specs/intune-api.md,
            # "MSAL for Python against another authority").
            session.trust_env = False
            session.verify = str(config.ca_bundle)
        # requests has no session-wide timeout; MSAL patches its own session the same way.
        session.request = functools.partial(  # type: ignore[method-assign]
            session.request, timeout=config.timeout_seconds
        )
        credential: Any = config.client_secret
        if config.client_certificate is not None:
            credential = {
                "private_key": config.client_certificate.private_key_pem,
                "public_certificate": config.client_certificate.certificate_pem,
            }
        try:
            return msal.ConfidentialClientApplication(
                config.client_id,
                client_credential=credential,
                authority=config.authority,
                token_cache=self._cache,
                http_client=session,
                # Otherwise MSAL asks login.microsoftonline.com about any other host.
                instance_discovery=False if _custom_host(config.authority_url) else None,
            )
        except requests.RequestException as exc:
            session.close()
            raise IntuneUnavailable(
                f"Entra OIDC discovery at {config.authority}: {type(exc).__name__}"
            ) from exc
        except ValueError as exc:
            session.close()
            # MSAL raises ValueError for a 4xx from OIDC discovery: unknown tenant.
            raise IntuneConfigurationError(
                f"Entra does not know tenant {config.tenant!r} at {config.authority_url}: "
                f"{str(exc)[:200]}"
            ) from exc


def _custom_host(authority_url: str) -> bool:
    return "login.microsoftonline.com" not in authority_url.lower()


def _classify(result: dict[str, Any], scope: str) -> IntuneUnavailable | IntuneConfigurationError:
    error = str(result.get("error", "unknown_error"))
    # error_description carries AADSTS codes and trace ids, never the secret.
    description = str(result.get("error_description", ""))[:300]
    log.error("entra refused a token", scope=scope, error=error, description=description)
    if error in _TRANSIENT_ERRORS:
        return IntuneUnavailable(f"Entra token endpoint: {error}")
    return IntuneConfigurationError(f"Entra refused a token for {scope}: {error}: {description}")


def _is_config(error: Exception) -> bool:
    return isinstance(error, IntuneConfigurationError)


def _observe(started: float, outcome: str) -> None:
    INTUNE_LATENCY.labels("token", outcome).observe(time.perf_counter() - started)

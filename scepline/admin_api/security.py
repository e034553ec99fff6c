"""The console's sessions and CSRF tokens, the limit on wrong tokens, and the
headers every answer of the admin port carries.

Sessions are signed cookies, not server state: ``<payload>.<HMAC>``, the
payload naming the token the session was opened with, a random session id and
its expiry. The key is made when the app starts, so a restart ends every
session (the operator logs in again with the token). Every request with a
session checks the token again: revoking it ends its sessions at once.

Each session has its own CSRF token (an HMAC of its id); every form carries it
and every POST is refused without it. The login form, before any session, has
a pre-session nonce in a cookie of its own and in the form (double submit).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "LOGIN_COOKIE",
    "SECURE_HEADERS",
    "SESSION_COOKIE",
    "FailureLimiter",
    "SecureHeaders",
    "Session",
    "SessionSigner",
    "client_address",
    "is_https",
]

SESSION_COOKIE = "scepline_session"
LOGIN_COOKIE = "scepline_login"

# No inline script or style anywhere: the console's JavaScript and CSS are files
# of its own; images are its own or inline SVG.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURE_HEADERS: dict[str, str] = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


class SecureHeaders:
    """ASGI middleware: the headers above on every answer; no caching of
    anything but the console's static files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() not in (b"cache-control",) or static
                ]
                for name, value in SECURE_HEADERS.items():
                    headers.append((name.encode(), value.encode()))
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def client_address(request: Request) -> str:
    """Whom failures are counted against: the peer (proxies' headers are not trusted)."""
    return request.client.host if request.client is not None else "unknown"


def is_https(request: Request) -> bool:
    """Behind https: the app's own TLS, or a proxy that says so."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


class FailureLimiter:
    """Wrong tokens per address within a sliding window; beyond ``allowed``,
    the address is refused until its oldest failure leaves the window. Per
    process (the admin port is served by one process)."""

    _MAX_ADDRESSES = 10_000

    def __init__(
        self, *, allowed: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._allowed = allowed
        self._window = window
        self._clock = clock
        self._failures: dict[str, collections.deque[float]] = {}

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may try again, or None if it may now."""
        failures = self._recent(address)
        if failures is None or len(failures) < self._allowed:
            return None
        return max(1.0, failures[0] + self._window - self._clock())

    def failed(self, address: str) -> None:
        failures = self._recent(address)
        if failures is None:
            if len(self._failures) >= self._MAX_ADDRESSES:
                self._forget_quiet()
            failures = self._failures[address] = collections.deque()
        failures.append(self._clock())

    def _recent(self, address: str) -> collections.deque[float] | None:
        failures = self._failures.get(address)
        if failures is None:
            return None
        horizon = self._clock() - self._window
        while failures and failures[0] <= horizon:
            failures.popleft()
        return failures

    def _forget_quiet(self) -> None:
        horizon = self._clock() - self._window
        for address in [a for a, f in self._failures.items() if not f or f[-1] <= horizon]:
            del self._failures[address]
        if len(self._failures) >= self._MAX_ADDRESSES:  # all busy: forget the oldest
            oldest = min(self._failures, key=lambda a: self._failures[a][-1])
            del self._failures[oldest]


@dataclass(frozen=True)
class Session:
    token_id: int
    session_id: str
    expires: float  # UNIX time


class SessionSigner:
    """Signs and checks session cookies and CSRF tokens with a key of this process."""

    def __init__(self, *, lifetime_seconds: float, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)
        self._lifetime = lifetime_seconds

    def new_session(self, token_id: int) -> tuple[Session, str]:
        session = Session(token_id, secrets.token_urlsafe(16), time.time() + self._lifetime)
        payload = _b64(
            json.dumps(
                {"t": session.token_id, "s": session.session_id, "e": int(session.expires)},
                separators=(",", ":"),
            ).encode()
        )
        return session, f"{payload}.{self._sign(b'session:' + payload.encode())}"

    def session(self, cookie: str | None) -> Session | None:
        if not cookie or cookie.count(".") != 1 or len(cookie) > 500:
            return None
        payload, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._sign(b"session:" + payload.encode())):
            return None
        try:
            fields = json.loads(_unb64(payload))
            session = Session(int(fields["t"]), str(fields["s"]), float(fields["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > time.time() else None

    def csrf_token(self, session_id: str) -> str:
        return self._sign(b"csrf:" + session_id.encode())

    def csrf_ok(self, session_id: str, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf_token(session_id), presented or "")

    @property
    def lifetime(self) -> float:
        return self._lifetime

    def _sign(self, data: bytes) -> str:
        return _b64(hmac.new(self._key, data, hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


Handler = Callable[[Request], Awaitable[Response]]

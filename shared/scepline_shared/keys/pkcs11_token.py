"""One PKCS#11 token: library handle, one logged-in session, a lock and a thread.

python-pkcs11 initialises modules with ``C_Initialize(NULL)``, so SoftHSM turns
its own mutexes off, and it releases the GIL inside every C_* call: two threads
using two sessions crash the process (``docs/specs/hsm-and-cms.md``,
"One session at a time"). So every token call in the process runs under one
process-wide lock, on the token's own single worker thread (which also keeps
blocking HSM calls off any event loop). Scale out with processes, not threads.

The session is opened lazily, on first use, in the process that uses it: open
tokens in each worker after fork ("After fork"). A session that the HSM dropped
(failover, restart, a logout elsewhere) is reopened once and the call retried
("Lost sessions").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

import pkcs11
from pkcs11 import exceptions as p11e

from scepline_shared.log import get_logger
from scepline_shared.scep.errors import KeyUnavailable

__all__ = [
    "SESSION_LOST_ERRORS",
    "HsmError",
    "KeyNotExtractable",
    "KeyNotFound",
    "Pkcs11Config",
    "Pkcs11KeyRef",
    "Pkcs11Token",
    "TokenUnavailable",
]

T = TypeVar("T")

_log = get_logger(__name__)

#: The session or its login is gone, not the operation's input: reopen and retry once.
#: Object/key handle errors are here because handles do not survive a reconnect.
SESSION_LOST_ERRORS: tuple[type[p11e.PKCS11Error], ...] = (
    p11e.SessionHandleInvalid,
    p11e.SessionClosed,
    p11e.DeviceRemoved,
    p11e.TokenNotPresent,
    p11e.UserNotLoggedIn,
    p11e.ObjectHandleInvalid,
    p11e.KeyHandleInvalid,
)
_LOGIN_ERRORS: tuple[type[p11e.PKCS11Error], ...] = (
    p11e.PinIncorrect,
    p11e.PinInvalid,
    p11e.PinLenRange,
    p11e.PinExpired,
    p11e.PinLocked,
    p11e.UserPinNotInitialized,
)

# RLock: an operation may call back into run() on the worker thread.
_PROCESS_LOCK = threading.RLock()
# Guards token state creation; held only briefly.
_STATE_LOCK = threading.Lock()
# module path -> pid that first initialised it through us (see _library).
_LIBRARY_PIDS: dict[str, int] = {}


def _reset_locks_in_child() -> None:
    # A lock held by another thread at fork time would never be released in the child.
    global _PROCESS_LOCK, _STATE_LOCK
    _PROCESS_LOCK = threading.RLock()
    _STATE_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_reset_locks_in_child)


class HsmError(KeyUnavailable, RuntimeError):
    """A token operation failed; ``__cause__`` holds the python-pkcs11 exception.

    The codec's KeyUnavailable: a SCEP request the token cannot decrypt now is
    retried by the client, not refused."""


class TokenUnavailable(HsmError):
    """The token or its session is unreachable, even after one reconnect: transient."""


class KeyNotFound(HsmError, LookupError):
    """No key object matches the label/id, or more than one does."""


class KeyNotExtractable(HsmError, TypeError):
    """The private key lives in the HSM; its value cannot be read."""


@dataclass(frozen=True, slots=True)
class Pkcs11KeyRef:
    """Where a key is on the token: CKA_LABEL and/or CKA_ID (both must match if given).

    ``id`` may be bytes or hex text (``"01"``, ``"0a:1b"``), as vendor tools print it.
    """

    label: str | None = None
    id: bytes | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", normalise_key_id(self.id))
        if self.label is None and self.id is None:
            raise ValueError("a key reference needs a label or an id")
        if self.label is not None and not self.label:
            raise ValueError("key label must not be empty")

    def __str__(self) -> str:
        parts = [f"label={self.label!r}"] if self.label is not None else []
        if self.id is not None:
            parts.append(f"id={self.id.hex()}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Pkcs11Config:
    """How to reach a token. The PIN is never part of repr/str (and so never logged).

    ``token_label`` selects the token; slot indexes are not stable (SoftHSM moves an
    initialised token to a random slot id; ``docs/specs/hsm-and-cms.md``,
    "Find the token by its label"). ``ca_key``/``ra_key`` name the
    keys the services load; either may be absent (e.g. an RA key kept in a file).
    """

    module: str
    token_label: str
    pin: str = field(repr=False)
    ca_key: Pkcs11KeyRef | None = None
    ra_key: Pkcs11KeyRef | None = None
    #: Open the main session R/W. Rarely useful: signing and decrypting are read-only,
    #: and key generation opens a short-lived R/W session of its own.
    read_write: bool = False

    def __post_init__(self) -> None:
        if not self.module:
            raise ValueError("PKCS#11 module path is empty")
        if not self.token_label:
            raise ValueError("PKCS#11 token label is empty")
        if not isinstance(self.pin, str):
            raise TypeError("PKCS#11 PIN must be a str")
        for name in ("ca_key", "ra_key"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Pkcs11KeyRef):
                raise TypeError(f"{name} must be a Pkcs11KeyRef")


def normalise_key_id(value: bytes | str | None) -> bytes | None:
    """CKA_ID as bytes; hex text (with optional ``:`` separators) is decoded."""
    if value is None or isinstance(value, bytes):
        return value or None
    if isinstance(value, str):
        try:
            decoded = bytes.fromhex(value.replace(":", ""))
        except ValueError as exc:
            raise ValueError(f"key id {value!r} is not hex") from exc
        return decoded or None
    raise TypeError(f"key id must be bytes or hex str, got {type(value).__name__}")


@dataclass(eq=False)
class _ProcessState:
    """What must not cross a fork: the worker thread, the session, cached handles."""

    pid: int
    executor: ThreadPoolExecutor = field(init=False)
    thread_id: int | None = None
    session: pkcs11.Session | None = None
    keys: dict[tuple[Any, ...], pkcs11.Object] = field(default_factory=dict)


class Pkcs11Token:
    """A token selected by label, used through one logged-in session.

    ``run(operation)`` calls ``operation(session)`` on the token's worker thread
    under the process-wide lock and blocks the caller until it returns; from
    asyncio use ``await run_async(operation)``. python-pkcs11 exceptions escape
    ``run`` as they are, except a lost session that the one reconnect could not
    fix (:class:`TokenUnavailable`) and login failures (:class:`HsmError`).

    Create one instance per token per process. PKCS#11 login state belongs to
    the process, not the session: a second instance opens its session without
    logging in again, and closing the instance that did log in logs the other out
    too (it then recovers by reconnecting, at the cost of one failed attempt).
    """

    def __init__(self, config: Pkcs11Config) -> None:
        if not isinstance(config, Pkcs11Config):
            raise TypeError("config must be a Pkcs11Config")
        self._config = config
        self._state: _ProcessState | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"Pkcs11Token(label={self._config.token_label!r}, module={self._config.module!r})"

    @property
    def config(self) -> Pkcs11Config:
        return self._config

    @property
    def label(self) -> str:
        return self._config.token_label

    def open(self) -> Self:
        """Log in now rather than on first use (surfaces a wrong PIN at startup)."""
        self.run(lambda _session: None)
        return self

    def run(self, operation: Callable[[pkcs11.Session], T]) -> T:
        """Run ``operation(session)`` on the token thread; blocks the calling thread."""
        state = self._process_state()
        if threading.get_ident() == state.thread_id:
            return self._call(state, operation)
        return state.executor.submit(self._call, state, operation).result()

    async def run_async(self, operation: Callable[[pkcs11.Session], T]) -> T:
        """Like :meth:`run`, awaiting the token thread instead of blocking the loop."""
        state = self._process_state()
        future = state.executor.submit(self._call, state, operation)
        return await asyncio.wrap_future(future)

    def cached_object(
        self, session: pkcs11.Session, key: tuple[Any, ...], find: Callable[[], pkcs11.Object]
    ) -> pkcs11.Object:
        """A handle found once per session (handles are per session: ``docs/specs/hsm-and-cms.md``,
        "Logins, sessions and handles").

        Call only inside an operation passed to :meth:`run`.
        """
        state = self._state
        if state is None or state.session is not session:
            return find()
        found = state.keys.get(key)
        if found is None:
            found = state.keys[key] = find()
        return found

    def close(self) -> None:
        """Close the session (logging out) and stop the worker thread. Idempotent."""
        with _STATE_LOCK:
            if self._closed:
                return
            state = self._state
            if state is not None and threading.get_ident() == state.thread_id:
                raise RuntimeError("Pkcs11Token.close() called from inside a token operation")
            self._closed = True
            self._state = None
        if state is None or state.pid != os.getpid():
            return  # never touch a session the parent process still uses
        # Queued after any pending operation, so those finish first.
        state.executor.submit(self._discard_session, state).result()
        state.executor.shutdown(wait=True)

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        await self.run_async(lambda _session: None)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)

    # -- internals ---------------------------------------------------------------

    def _process_state(self) -> _ProcessState:
        with _STATE_LOCK:
            if self._closed:
                raise HsmError(f"{self!r} is closed")
            state = self._state
            if state is None:
                state = _ProcessState(pid=os.getpid())
                state.executor = ThreadPoolExecutor(
                    max_workers=1,
                    thread_name_prefix=f"pkcs11-{self._config.token_label}",
                    initializer=_mark_worker,
                    initargs=(state,),
                )
                self._state = state
            elif state.pid != os.getpid():
                # Per PKCS#11 a child must not use its parent's sessions; SoftHSM
                # appears to work, a network HSM would share the parent's socket.
                raise HsmError(
                    f"{self!r} was opened in process {state.pid} before a fork; "
                    "create and open tokens in each worker process after forking"
                )
            return state

    def _call(self, state: _ProcessState, operation: Callable[[pkcs11.Session], T]) -> T:
        with _PROCESS_LOCK:
            try:
                return operation(self._session(state))
            except SESSION_LOST_ERRORS as exc:
                _log.warning(
                    "pkcs11 session lost, reconnecting",
                    hsm_label=self._config.token_label,
                    error=type(exc).__name__,
                )
                self._discard_session(state)
            try:
                return operation(self._session(state))
            except SESSION_LOST_ERRORS as exc:
                self._discard_session(state)
                raise TokenUnavailable(
                    f"token {self._config.token_label!r}: session lost again after "
                    f"reconnecting ({type(exc).__name__})"
                ) from exc

    def _session(self, state: _ProcessState) -> pkcs11.Session:
        if state.session is not None:
            return state.session
        config = self._config
        try:
            library = _library(config.module)
        except p11e.PKCS11Error as exc:  # missing file, not a PKCS#11 module...
            raise HsmError(f"cannot load PKCS#11 module {config.module!r}: {exc}") from exc
        try:
            token = library.get_token(token_label=config.token_label)
        except p11e.MultipleTokensReturned as exc:
            raise HsmError(f"more than one token is labelled {config.token_label!r}") from exc
        except p11e.PKCS11Error as exc:
            raise TokenUnavailable(
                f"token {config.token_label!r} not available: {type(exc).__name__}"
            ) from exc
        try:
            try:
                session = token.open(rw=config.read_write, user_pin=config.pin)
            except p11e.UserAlreadyLoggedIn:
                # Login is per application: another session (another Pkcs11Token on
                # this token) already did it, and a second C_Login is refused.
                session = token.open(rw=config.read_write)
        except _LOGIN_ERRORS as exc:
            # Not transient: retrying a wrong PIN would lock the token.
            raise HsmError(
                f"login to token {config.token_label!r} failed: {type(exc).__name__}"
            ) from exc
        except p11e.PKCS11Error as exc:
            raise TokenUnavailable(
                f"cannot open a session on token {config.token_label!r}: {type(exc).__name__}"
            ) from exc
        state.session = session
        _log.info("pkcs11 session opened", hsm_label=config.token_label, pid=state.pid)
        return session

    @staticmethod
    def _discard_session(state: _ProcessState) -> None:
        with _PROCESS_LOCK:  # C_Logout/C_CloseSession are token calls like any other
            session, state.session = state.session, None
            state.keys.clear()
            if session is None:
                return
            # C_Logout (if we logged in) + C_CloseSession; failing means it is gone already.
            with contextlib.suppress(p11e.PKCS11Error):
                session.close()


def _mark_worker(state: _ProcessState) -> None:
    state.thread_id = threading.get_ident()


def _library(module: str) -> Any:
    """The initialised module; re-initialised once in a child forked after loading it.

    python-pkcs11 caches one handle per module for the whole process, and a
    forked child inherits it "initialised" with the parent's Cryptoki state; the
    PKCS#11 spec wants the child to initialise its own (SoftHSM otherwise refuses
    a fresh login with UserAlreadyLoggedIn).
    """
    library = pkcs11.lib(module)
    owner = _LIBRARY_PIDS.setdefault(module, os.getpid())
    if owner != os.getpid():
        library.reinitialize()
        _LIBRARY_PIDS[module] = os.getpid()
    return library

"""The store and broker connections one process holds (:func:`runtime`).

Apart from the composition root (``runtime.py``) so that the operator commands
open the store without importing the services, the web stack and Intune.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from scepline_shared.broker.base import Broker, create_broker
from scepline_shared.log import get_logger
from scepline_shared.private_files import private_directory
from scepline_shared.settings import Settings
from scepline_shared.store.admin import AdminRepository
from scepline_shared.store.certificates import CertificateRepository
from scepline_shared.store.database import create_engine_for, session_factory
from scepline_shared.store.errors import StoreKeyError
from scepline_shared.store.migrate import upgrade_to_head
from scepline_shared.store.repository import RequestRepository
from scepline_shared.store.seal_legacy import seal_legacy_csrs
from scepline_shared.store.store_key import STORE_KEY_FILE, CsrSealer, load_store_key

from .errors import CommandError

__all__ = ["SERVICE_PATIENCE_SECONDS", "Runtime", "redacted", "runtime"]

log = get_logger(__name__)

# How long a service waits at start for its database server and broker: in a
# fleet they restart too, and a replica that exits only adds to the churn.
SERVICE_PATIENCE_SECONDS = 120.0


@dataclass
class Runtime:
    """The connections one process holds."""

    settings: Settings
    engine: AsyncEngine
    repository: RequestRepository
    broker: Broker

    @functools.cached_property
    def admin(self) -> AdminRepository:
        """Tokens, operator actions, Intune status, dashboard figures (same store)."""
        return AdminRepository(session_factory(self.engine))

    async def ready(self) -> bool:
        return self.broker.healthy and await store_answers(self.engine)


async def store_answers(engine: AsyncEngine) -> bool:
    """Whether the store answers a trivial statement now (readiness)."""
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - readiness reports, it does not raise
        return False
    return True


@contextlib.asynccontextmanager
async def certificate_store(
    settings: Settings,
) -> AsyncIterator[tuple[AsyncEngine, CertificateRepository]]:
    """The store as a reader of certificates only (``scepline ocsp``): no
    migration, no store key, no broker. A responder replica on another host
    needs neither the key the CSRs are sealed with nor the right to change the
    schema; until the schema exists its reads fail and it answers tryLater."""
    engine = create_engine_for(
        settings.effective_database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
    )
    try:
        yield engine, CertificateRepository(session_factory(engine))
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def runtime(
    settings: Settings, *, with_broker: bool = True, patience: float = SERVICE_PATIENCE_SECONDS
) -> AsyncIterator[Runtime]:
    """The store (migrated to head, its CSRs sealed) and, unless told otherwise,
    the broker; each retried for ``patience`` seconds (a SQLite file is not: it
    opens or it does not), then a :class:`CommandError` naming what failed."""
    private_directory(settings.data_dir)
    sealer = _store_sealer(settings)
    url = settings.effective_database_url
    store_patience = 0.0 if url.startswith("sqlite") else patience
    await _patiently(
        f"open the database {redacted(url)}", lambda: upgrade_to_head(url), store_patience
    )
    engine = create_engine_for(
        url, pool_size=settings.database_pool_size, max_overflow=settings.database_max_overflow
    )
    broker = create_broker(settings.broker_url, namespace=settings.broker_namespace)
    try:
        try:
            sealed = await seal_legacy_csrs(engine, sealer)
        except StoreKeyError as error:
            raise CommandError(
                f"SCEPLINE_STORE_KEY_FILE {_store_key_path(settings)}: {error}"
            ) from None
        if sealed:
            log.info("sealed CSRs stored before sealing existed", count=sealed)
        if with_broker:
            await _patiently(
                f"connect to the broker {redacted(settings.broker_url)}", broker.start, patience
            )
        repository = RequestRepository(session_factory(engine), sealer=sealer)
        yield Runtime(settings, engine, repository, broker)
    finally:
        if with_broker:
            await broker.close()
        await engine.dispose()


def _store_key_path(settings: Settings) -> Path:
    return settings.store_key_file or settings.data_dir / STORE_KEY_FILE


def _store_sealer(settings: Settings) -> CsrSealer:
    """The store key: generated in the data directory unless the operator gives one."""
    try:
        return load_store_key(_store_key_path(settings), create=settings.store_key_file is None)
    except StoreKeyError as error:
        raise CommandError(f"SCEPLINE_STORE_KEY_FILE: {error}") from None


async def _patiently(
    what: str, attempt: Callable[[], Awaitable[None]], give_up_after: float
) -> None:
    """Retry ``attempt`` with backoff for ``give_up_after`` seconds, logging each
    failure; then give up with one line saying what could not be done and why."""
    deadline = asyncio.get_running_loop().time() + give_up_after
    delay = 0.5
    while True:
        try:
            await attempt()
            return
        except Exception as error:
            if asyncio.get_running_loop().time() + delay > deadline:
                waited = f" (tried for {give_up_after:g} s)" if give_up_after else ""
                raise CommandError(f"could not {what}{waited}: {_reason(error)}") from error
            log.warning(
                "start-up step failed; retrying", step=what, error=str(error)[:200], retry_in=delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def _reason(error: BaseException) -> str:
    """The first line of what went wrong, without SQLAlchemy's appendix."""
    cause = getattr(error, "orig", None) or error
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return text[:300]


def redacted(url: str) -> str:
    """A database or broker URL without its password, for logs and messages."""
    if "://" not in url:
        return url
    if url.startswith(("amqp", "memory")):
        scheme, _, rest = url.partition("://")
        if "@" not in rest:
            return url
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL: show only its scheme
        return url.split("://", 1)[0] + "://..."

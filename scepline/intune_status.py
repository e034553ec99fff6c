"""Each process's latest Intune call and failure, kept in the store for the
console (``intune_status``): the processes that talk to Intune (validators,
notifiers, the serving processes of ``scepline up``) are not the one serving
the console, and may run on other hosts.

The client tells :class:`IntuneStatusReporter` of every call (in memory); it
writes its row every few seconds when something changed, so an enrolment
burst costs one statement per interval, not one per call. When Intune starts
failing, or answers again, the row is written at once: the console shows an
outage and its end without waiting for the interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Sequence

from scepline_shared.intune import IntuneClient
from scepline_shared.intune.client import IntuneCall
from scepline_shared.log import get_logger
from scepline_shared.store.admin import AdminRepository, IntuneStatusView
from scepline_shared.store.certificates import utc_now

__all__ = ["FLUSH_SECONDS", "IntuneStatusReporter", "reporting"]

log = get_logger(__name__)

FLUSH_SECONDS = 5.0
_MAX_ERROR = 1000


class IntuneStatusReporter:
    def __init__(self, admin: AdminRepository, *, interval: float = FLUSH_SECONDS) -> None:
        self._admin = admin
        self._interval = interval
        self._stopped = asyncio.Event()
        self._urgent = asyncio.Event()
        self._dirty = False
        self._answering: bool | None = None  # as of the last call
        self._status = IntuneStatusView(
            reporter=f"{socket.gethostname()}:{os.getpid()}"[:255],
            updated_at=utc_now(),
            last_call_at=None,
            last_call=None,
            last_outcome=None,
            last_latency_ms=None,
            latency_ms_total=0,
            last_error_at=None,
            last_error=None,
            calls=0,
            failures=0,
        )

    def observe(self, call: IntuneCall) -> None:
        status = self._status
        latency = round(call.seconds * 1000)
        failed = call.error is not None
        self._status = IntuneStatusView(
            reporter=status.reporter,
            updated_at=call.at,
            last_call_at=call.at,
            last_call=call.call,
            last_outcome=call.outcome,
            last_latency_ms=latency,
            latency_ms_total=status.latency_ms_total + latency,
            last_error_at=call.at if failed else status.last_error_at,
            # The client's messages name the call already.
            last_error=call.error[:_MAX_ERROR] if call.error is not None else status.last_error,
            calls=status.calls + 1,
            failures=status.failures + (1 if failed else 0),
        )
        self._dirty = True
        answering = call.outcome in ("success", "rejected")
        if answering != self._answering:
            self._answering = answering
            self._urgent.set()

    async def flush(self) -> bool:
        if not self._dirty:
            return True
        self._dirty = False
        try:
            await self._admin.report_intune(self._status)
        except Exception as error:  # noqa: BLE001 - the store is down: try again later
            self._dirty = True
            log.warning("intune status not recorded", error=str(error)[:200])
            return False
        return True

    async def run(self) -> None:
        """Flush every interval, or at once when Intune's answering changed,
        until :meth:`stop`; then once more (what the last interval saw)."""
        while not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._urgent.wait(), timeout=self._interval)
            self._urgent.clear()
            await self.flush()
        await self.flush()

    def stop(self) -> None:
        self._stopped.set()
        self._urgent.set()


def reporting(
    intune: IntuneClient | Sequence[IntuneClient] | None, admin: AdminRepository
) -> IntuneStatusReporter | None:
    """A reporter listening to ``intune``, one client or every tenant's (None
    without an Intune client)."""
    clients = [intune] if isinstance(intune, IntuneClient) else list(intune or [])
    unique = list({id(client): client for client in clients}.values())
    if not unique:
        return None
    reporter = IntuneStatusReporter(admin)
    for client in unique:
        client.observe(reporter.observe)
    return reporter

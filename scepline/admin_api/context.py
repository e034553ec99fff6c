"""What the management API and the console work on, and the figures they show.

One :class:`AdminContext` per admin app: the store (requests, certificates,
tokens), the broker (RabbitMQ's dead-letter queues; the in-process broker's
dead letters are parked requests in the store), where queue depths come from,
and how the serving processes' readiness is known. The composition root
(``serve.py``) builds it for each deployment.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scepline_shared.broker.base import Broker
from scepline_shared.pipeline import Step
from scepline_shared.settings import Settings
from scepline_shared.store.admin import AdminRepository, IntuneStatusView
from scepline_shared.store.models import NON_TERMINAL_STATES, TERMINAL_STATES, RequestState
from scepline_shared.store.repository import RequestRepository

from .. import actions
from ..connections import redacted
from .cas import GenerationInfo, generations
from .tokens import TokenChecker

__all__ = ["AdminContext", "QueueDepths", "queue_depths_from_registry"]

# Queue depths by "<step>.<kind>" (work, retry, dlq), or None when unknown.
QueueDepths = Callable[[], Awaitable[dict[str, int] | None]]
# Intune statuses older than this are not shown (a process long gone).
_INTUNE_HORIZON = timedelta(days=7)


def queue_depths_from_registry(registry: CollectorRegistry) -> QueueDepths:
    """The depths every serving process of ``scepline up`` reports in its
    ``scepline_queue_messages`` gauge, summed (each has its own in-process queues)."""

    async def depths() -> dict[str, int] | None:
        found: dict[str, int] = {}
        for metric in registry.collect():
            if metric.name != "scepline_queue_messages":
                continue
            for sample in metric.samples:
                step, queue = sample.labels.get("step"), sample.labels.get("queue")
                if step and queue:
                    key = f"{step}.{queue}"
                    found[key] = found.get(key, 0) + int(sample.value)
        return found or None

    return depths


@dataclass
class AdminContext:
    settings: Settings
    engine: AsyncEngine
    repository: RequestRepository
    admin: AdminRepository
    broker: Broker
    queue_depths: QueueDepths
    # Whether the processes serving SCEP are ready (None: not this deployment's to say).
    serving_ready: Callable[[], Awaitable[bool]] | None = None
    tokens: TokenChecker = field(init=False)
    # Operations on dead letters take turns within this app (RabbitMQ's DLQ
    # turn queue does it across processes).
    dead_letter_turn: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.tokens = TokenChecker(self.admin)
        self._keys: Any = None  # the KeySource of the HSM check, made once

    @property
    def in_process(self) -> bool:
        return self.settings.broker_url.startswith("memory://")

    # -- the parts ------------------------------------------------------------------

    async def database_health(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            async with self.engine.connect() as connection:
                await asyncio.wait_for(connection.execute(text("SELECT 1")), timeout=5)
        except Exception as error:  # noqa: BLE001 - health reports, it does not raise
            return {
                "ok": False,
                "url": redacted(self.settings.effective_database_url),
                "error": str(error).splitlines()[0][:300] if str(error) else type(error).__name__,
            }
        return {
            "ok": True,
            "url": redacted(self.settings.effective_database_url),
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        }

    async def broker_health(self) -> dict[str, Any]:
        if self.in_process:
            ready = None if self.serving_ready is None else await self.serving_ready()
            return {
                "ok": ready,
                "kind": "in-process",
                "detail": "inside each serving process of scepline up",
            }
        ok = self.broker.healthy
        detail = {"ok": ok, "kind": "rabbitmq", "url": redacted(self.settings.broker_url)}
        if not ok:
            detail["error"] = "not connected"
        return detail

    async def hsm_health(self) -> dict[str, Any]:
        if self.settings.key_backend != "pkcs11":
            return {"ok": None, "backend": "file", "detail": "CA and RA keys in files"}
        from scepline_shared.configured import key_source

        try:
            if self._keys is None:  # one token instance per process, never closed
                self._keys = await asyncio.to_thread(key_source, self.settings)
            token = self._keys.require_token("the HSM check")
            await asyncio.wait_for(token.run_async(lambda _session: None), timeout=5)
        except Exception as error:  # noqa: BLE001 - health reports, it does not raise
            return {
                "ok": False,
                "backend": "pkcs11",
                "token": self.settings.pkcs11_token_label,
                "error": str(error)[:300] or type(error).__name__,
            }
        return {"ok": True, "backend": "pkcs11", "token": self.settings.pkcs11_token_label}

    async def intune(self) -> dict[str, Any]:
        """The latest Intune call and failure any process reported."""
        configured = self.settings.challenge_provider == "intune"
        if not configured:
            return {"configured": False}
        since = datetime.now(UTC) - _INTUNE_HORIZON
        rows: list[IntuneStatusView] = await self.admin.intune_statuses(since=since)
        calls = sum(row.calls for row in rows)
        latency = sum(row.latency_ms_total for row in rows)
        last = max(
            (row for row in rows if row.last_call_at), key=lambda r: r.last_call_at, default=None
        )
        error = max(
            (row for row in rows if row.last_error_at), key=lambda r: r.last_error_at, default=None
        )
        ok = None
        if last is not None:
            ok = last.last_outcome in ("success", "rejected")
        return {
            "configured": True,
            "ok": ok,
            "last_call_at": last.last_call_at if last else None,
            "last_call": last.last_call if last else None,
            "last_outcome": last.last_outcome if last else None,
            "last_latency_ms": last.last_latency_ms if last else None,
            "mean_latency_ms": round(latency / calls) if calls else None,
            "last_error_at": error.last_error_at if error else None,
            "last_error": error.last_error if error else None,
            "calls": calls,
            "failures": sum(row.failures for row in rows),
            "processes": len(rows),
        }

    async def cas(self) -> list[GenerationInfo]:
        return await generations(self.settings.data_dir, self.repository, datetime.now(UTC))

    async def health(self) -> dict[str, Any]:
        database, broker, hsm = await asyncio.gather(
            self.database_health(), self.broker_health(), self.hsm_health()
        )
        intune: dict[str, Any] = {"configured": self.settings.challenge_provider == "intune"}
        if database["ok"]:
            intune = await self.intune()
        serving = None if self.serving_ready is None else await self.serving_ready()
        ca = await self._ca_expiry() if database["ok"] else None
        parts = [database["ok"], broker["ok"], hsm["ok"], intune.get("ok"), serving]
        healthy = all(part is not False for part in parts)
        return {
            "status": "ok" if healthy else "degraded",
            "database": database,
            "broker": broker,
            "hsm": hsm,
            "intune": intune,
            "serving": {"ready": serving},
            "ca": ca,
        }

    async def _ca_expiry(self) -> dict[str, Any] | None:
        try:
            found = await self.cas()
        except Exception as error:  # noqa: BLE001 - health reports, it does not raise
            return {"error": str(error)[:300]}
        now = datetime.now(UTC)
        for generation in found:
            if generation.status == "active":
                return {
                    "generation": generation.number,
                    "ca_not_after": generation.ca.not_after,
                    "ca_days_left": round(generation.ca.days_left(now), 1),
                    "ra_not_after": generation.ra.not_after,
                    "ra_days_left": round(generation.ra.days_left(now), 1),
                    "staged": [g.number for g in found if g.status == "staged"],
                }
        return None

    # -- the dashboard -----------------------------------------------------------------

    async def dashboard(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        day_ago = now - timedelta(hours=24)
        hour_ago = now - timedelta(hours=1)
        per_hour = await self.admin.per_hour(RequestState.ISSUED, hours=24)
        outcomes = await self.admin.state_figures(sorted(TERMINAL_STATES), changed_since=day_ago)
        last_hour = await self.admin.state_figures([RequestState.ISSUED], changed_since=hour_ago)
        in_flight = await self.admin.state_figures(sorted(NON_TERMINAL_STATES))
        found = await actions.letters(
            self.settings, self.repository, self.broker, list(Step), limit=1000
        )
        try:
            depths = await self.queue_depths()
        except Exception:  # noqa: BLE001 - the broker is down: the health says so
            depths = None
        return {
            "at": now,
            "issued_last_hour": last_hour.get(RequestState.ISSUED, _NONE).count,
            "issued_per_hour": [{"hour": hour, "issued": count} for hour, count in per_hour],
            "outcomes_24h": {
                state.value: outcomes.get(state, _NONE).count for state in sorted(TERMINAL_STATES)
            },
            "in_flight": {
                state.value: {
                    "count": in_flight.get(state, _NONE).count,
                    "oldest_update": in_flight.get(state, _NONE).oldest_update,
                }
                for state in _PIPELINE_ORDER
            },
            "parked": await self.admin.parked_count(),
            "dead_letters": {
                step.value: {
                    "waiting": sum(1 for letter in letters if not letter.resolved),
                    "resolved": sum(1 for letter in letters if letter.resolved),
                }
                for step, letters in found.items()
            },
            "queues": depths,
            "intune": await self.intune(),
            "ca": await self._ca_expiry(),
        }


class _Nothing:
    count = 0
    oldest_update = None


_NONE: Any = _Nothing()
_PIPELINE_ORDER = [
    RequestState.RECEIVED,
    RequestState.VALIDATED,
    RequestState.SIGNING,
    RequestState.SIGNED,
]

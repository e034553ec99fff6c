"""Typed clients for the ``/_sim`` admin API, sync and async.

Each operation is described once (``_ops``) as an HTTP request plus a parser;
``SimulatorAdmin`` runs it with ``httpx.Client`` and ``AsyncSimulatorAdmin``
with ``httpx.AsyncClient``, so the two cannot drift apart.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

import httpx

from .models import (
    AppRegistration,
    ChallengeSpec,
    ClockState,
    FaultKind,
    FaultSpec,
    Knobs,
    MintedChallenge,
    RecordedCall,
    RecordedNotification,
    RevocationQueued,
    RevocationSeed,
    Route,
)

__all__ = ["AsyncSimulatorAdmin", "SimulatorAdmin"]

T = TypeVar("T")
Verify = bool | str | Path


@dataclass(frozen=True)
class _Op(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    json: Any = None
    params: dict[str, str] = field(default_factory=dict)


def _ignore(_: Any) -> None:
    return None


def _list(model: Callable[[Any], T]) -> Callable[[Any], list[T]]:
    return lambda items: [model(item) for item in items]


class _ops:  # a namespace of request builders
    @staticmethod
    def reset() -> _Op[None]:
        return _Op("POST", "/_sim/reset", _ignore)

    @staticmethod
    def state() -> _Op[dict[str, Any]]:
        return _Op("GET", "/_sim/state", dict)

    @staticmethod
    def register_app(app: AppRegistration) -> _Op[None]:
        return _Op("POST", "/_sim/apps", _ignore, json=app.model_dump())

    @staticmethod
    def set_knobs(changes: dict[str, Any]) -> _Op[Knobs]:
        return _Op("POST", "/_sim/knobs", Knobs.model_validate, json=changes)

    @staticmethod
    def clock(advance: float | None, offset: float | None) -> _Op[ClockState]:
        body = {"advance_seconds": advance, "offset_seconds": offset}
        return _Op("POST", "/_sim/clock", ClockState.model_validate, json=body)

    @staticmethod
    def expire_tokens() -> _Op[None]:
        return _Op("POST", "/_sim/tokens/expire", _ignore)

    @staticmethod
    def mint_challenge(spec: ChallengeSpec) -> _Op[MintedChallenge]:
        body = spec.model_dump(mode="json")
        return _Op("POST", "/_sim/challenges", MintedChallenge.model_validate, json=body)

    @staticmethod
    def untarget(challenge_id: str) -> _Op[None]:
        return _Op("POST", f"/_sim/challenges/{challenge_id}/untarget", _ignore)

    @staticmethod
    def add_fault(spec: FaultSpec) -> _Op[FaultSpec]:
        body = spec.model_dump(mode="json")
        return _Op("POST", "/_sim/faults", FaultSpec.model_validate, json=body)

    @staticmethod
    def clear_faults() -> _Op[None]:
        return _Op("DELETE", "/_sim/faults", _ignore)

    @staticmethod
    def calls(route: Route | str | None) -> _Op[list[RecordedCall]]:
        params = {"route": str(route)} if route else {}
        return _Op("GET", "/_sim/calls", _list(RecordedCall.model_validate), params=params)

    @staticmethod
    def counters() -> _Op[dict[str, dict[str, int]]]:
        return _Op("GET", "/_sim/counters", dict)

    @staticmethod
    def notifications(kind: str | None) -> _Op[list[RecordedNotification]]:
        params = {"kind": kind} if kind else {}
        parse = _list(RecordedNotification.model_validate)
        return _Op("GET", "/_sim/notifications", parse, params=params)

    @staticmethod
    def queue_revocations(seed: RevocationSeed) -> _Op[RevocationQueued]:
        body = seed.model_dump()
        return _Op("POST", "/_sim/revocations", RevocationQueued.model_validate, json=body)

    @staticmethod
    def revocations() -> _Op[dict[str, Any]]:
        return _Op("GET", "/_sim/revocations", dict)


def _fault(route: Route | str, kind: FaultKind | str, options: dict[str, Any]) -> FaultSpec:
    return FaultSpec.model_validate({"route": route, "kind": kind, **options})


class SimulatorAdmin:
    """Blocking admin client. ``.aio`` gives the async twin for the same server."""

    def __init__(self, base_url: str, *, verify: Verify = True, timeout: float = 10) -> None:
        self.base_url, self._verify, self._timeout = base_url.rstrip("/"), verify, timeout
        self._http = httpx.Client(
            base_url=self.base_url, verify=_ssl(verify), timeout=timeout, trust_env=False
        )

    @property
    def aio(self) -> AsyncSimulatorAdmin:
        return AsyncSimulatorAdmin(self.base_url, verify=self._verify, timeout=self._timeout)

    def _run(self, op: _Op[T]) -> T:
        response = self._http.request(op.method, op.path, json=op.json, params=op.params)
        response.raise_for_status()
        return op.parse(response.json())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SimulatorAdmin:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def reset(self) -> None:
        self._run(_ops.reset())

    def state(self) -> dict[str, Any]:
        return self._run(_ops.state())

    def register_app(self, app: AppRegistration) -> None:
        self._run(_ops.register_app(app))

    def set_knobs(self, **changes: Any) -> Knobs:
        return self._run(_ops.set_knobs(changes))

    def move_shard(self, shard: str) -> Knobs:
        """Intune moved the tenant: discovery lists `shard`, the old URIs answer 404."""
        return self._run(_ops.set_knobs({"shard": shard}))

    def advance_clock(self, seconds: float) -> ClockState:
        return self._run(_ops.clock(seconds, None))

    def set_clock_offset(self, seconds: float) -> ClockState:
        return self._run(_ops.clock(None, seconds))

    def expire_tokens(self) -> None:
        self._run(_ops.expire_tokens())

    def mint_challenge(self, spec: ChallengeSpec | None = None, **fields: Any) -> MintedChallenge:
        return self._run(_ops.mint_challenge(spec or ChallengeSpec(**fields)))

    def untarget(self, challenge_id: str) -> None:
        self._run(_ops.untarget(challenge_id))

    def add_fault(self, route: Route | str, kind: FaultKind | str, **options: Any) -> FaultSpec:
        return self._run(_ops.add_fault(_fault(route, kind, options)))

    def clear_faults(self) -> None:
        self._run(_ops.clear_faults())

    def calls(self, route: Route | str | None = None) -> list[RecordedCall]:
        return self._run(_ops.calls(route))

    def counters(self) -> dict[str, dict[str, int]]:
        return self._run(_ops.counters())

    def token_count(self, scope: str) -> int:
        return self.counters()["tokens"].get(scope, 0)

    def notifications(self, kind: str | None = None) -> list[RecordedNotification]:
        return self._run(_ops.notifications(kind))

    def queue_revocations(
        self, seed: RevocationSeed | None = None, **fields: Any
    ) -> RevocationQueued:
        return self._run(_ops.queue_revocations(seed or RevocationSeed(**fields)))

    def revocations(self) -> dict[str, Any]:
        return self._run(_ops.revocations())


class AsyncSimulatorAdmin:
    """The async twin of ``SimulatorAdmin``: same methods, awaitable."""

    def __init__(self, base_url: str, *, verify: Verify = True, timeout: float = 10) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url, verify=_ssl(verify), timeout=timeout, trust_env=False
        )

    async def _run(self, op: _Op[T]) -> T:
        response = await self._http.request(op.method, op.path, json=op.json, params=op.params)
        response.raise_for_status()
        return op.parse(response.json())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncSimulatorAdmin:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def reset(self) -> None:
        await self._run(_ops.reset())

    async def state(self) -> dict[str, Any]:
        return await self._run(_ops.state())

    async def register_app(self, app: AppRegistration) -> None:
        await self._run(_ops.register_app(app))

    async def set_knobs(self, **changes: Any) -> Knobs:
        return await self._run(_ops.set_knobs(changes))

    async def move_shard(self, shard: str) -> Knobs:
        return await self._run(_ops.set_knobs({"shard": shard}))

    async def advance_clock(self, seconds: float) -> ClockState:
        return await self._run(_ops.clock(seconds, None))

    async def set_clock_offset(self, seconds: float) -> ClockState:
        return await self._run(_ops.clock(None, seconds))

    async def expire_tokens(self) -> None:
        await self._run(_ops.expire_tokens())

    async def mint_challenge(
        self, spec: ChallengeSpec | None = None, **fields: Any
    ) -> MintedChallenge:
        return await self._run(_ops.mint_challenge(spec or ChallengeSpec(**fields)))

    async def untarget(self, challenge_id: str) -> None:
        await self._run(_ops.untarget(challenge_id))

    async def add_fault(
        self, route: Route | str, kind: FaultKind | str, **options: Any
    ) -> FaultSpec:
        return await self._run(_ops.add_fault(_fault(route, kind, options)))

    async def clear_faults(self) -> None:
        await self._run(_ops.clear_faults())

    async def calls(self, route: Route | str | None = None) -> list[RecordedCall]:
        return await self._run(_ops.calls(route))

    async def counters(self) -> dict[str, dict[str, int]]:
        return await self._run(_ops.counters())

    async def token_count(self, scope: str) -> int:
        return (await self.counters())["tokens"].get(scope, 0)

    async def notifications(self, kind: str | None = None) -> list[RecordedNotification]:
        return await self._run(_ops.notifications(kind))

    async def queue_revocations(
        self, seed: RevocationSeed | None = None, **fields: Any
    ) -> RevocationQueued:
        return await self._run(_ops.queue_revocations(seed or RevocationSeed(**fields)))

    async def revocations(self) -> dict[str, Any]:
        return await self._run(_ops.revocations())


def _ssl(verify: Verify) -> bool | ssl.SSLContext:
    # httpx 0.28 deprecates a CA-bundle path as `verify`; give it a context instead.
    if isinstance(verify, bool):
        return verify
    return ssl.create_default_context(cafile=str(verify))

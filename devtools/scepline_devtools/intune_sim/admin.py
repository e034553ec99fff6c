"""The simulator's own control API under ``/_sim``: no Microsoft counterpart.

Tests in other processes drive the simulator through it (see ``SimulatorAdmin``).
It is unauthenticated: the simulator only ever listens on loopback.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request

from .challenges import mint
from .entra import base_url
from .graph import discovered_uris
from .models import (
    AppRegistration,
    ChallengeSpec,
    ClockState,
    ClockUpdate,
    FaultSpec,
    Knobs,
    MintedChallenge,
    RecordedCall,
    RecordedNotification,
    RevocationQueued,
    RevocationSeed,
    Route,
)
from .pki_connector import queue_revocations
from .state import SimulatorState

__all__ = ["admin_router"]

admin_router = APIRouter(prefix="/_sim")


def _state(request: Request) -> SimulatorState:
    state: SimulatorState = request.app.state.simulator
    return state


@admin_router.get("/state")
async def describe(request: Request) -> dict[str, Any]:
    state, base = _state(request), base_url(request)
    return {
        "base_url": base,
        "tenant_id": state.tenant_id,
        "tenant_domain": state.tenant_domain,
        "authority": f"{base}/{state.tenant_id}",
        "graph_url": base,
        "apps": sorted(state.apps),
        "knobs": state.knobs.model_dump(),
        "clock": _clock(state).model_dump(mode="json"),
        "discovered": discovered_uris(state, base),
        "faults": [f.model_dump(mode="json") for f in state.faults],
    }


@admin_router.post("/reset")
async def reset(request: Request) -> dict[str, bool]:
    _state(request).reset()
    return {"reset": True}


@admin_router.post("/apps")
async def register_app(app: AppRegistration, request: Request) -> dict[str, str]:
    _state(request).register_app(app)
    return {"client_id": app.client_id}


@admin_router.delete("/apps/{client_id}")
async def delete_app(client_id: str, request: Request) -> dict[str, bool]:
    state = _state(request)
    with state.lock:
        removed = state.apps.pop(client_id, None) is not None
    return {"removed": removed}


@admin_router.post("/knobs")
async def set_knobs(changes: dict[str, Any], request: Request) -> Knobs:
    try:
        return _state(request).set_knobs(**changes)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise HTTPException(422, str(exc)) from exc


@admin_router.post("/clock")
async def set_clock(update: ClockUpdate, request: Request) -> ClockState:
    state = _state(request)
    with state.lock:
        if update.offset_seconds is not None:
            state.clock.offset_seconds = update.offset_seconds
        if update.advance_seconds is not None:
            state.clock.advance(update.advance_seconds)
    return _clock(state)


def _clock(state: SimulatorState) -> ClockState:
    return ClockState(now=state.clock.now(), offset_seconds=state.clock.offset_seconds)


@admin_router.post("/tokens/expire")
async def expire_tokens(request: Request) -> dict[str, bool]:
    _state(request).expire_tokens()
    return {"expired": True}


@admin_router.post("/challenges")
async def mint_challenge(spec: ChallengeSpec, request: Request) -> MintedChallenge:
    return mint(_state(request), spec)


@admin_router.post("/challenges/{challenge_id}/untarget")
async def untarget(challenge_id: str, request: Request) -> dict[str, bool]:
    state = _state(request)
    with state.lock:
        record = state.challenges.get(challenge_id)
        if record is None:
            raise HTTPException(404, f"no challenge {challenge_id}")
        record.untargeted = True
    return {"untargeted": True}


@admin_router.get("/challenges/{challenge_id}")
async def challenge(challenge_id: str, request: Request) -> dict[str, Any]:
    record = _state(request).challenges.get(challenge_id)
    if record is None:
        raise HTTPException(404, f"no challenge {challenge_id}")
    return {"id": challenge_id, "untargeted": record.untargeted, "uses": record.uses}


@admin_router.post("/faults")
async def add_fault(spec: FaultSpec, request: Request) -> FaultSpec:
    return _state(request).add_fault(spec)


@admin_router.get("/faults")
async def list_faults(request: Request) -> list[FaultSpec]:
    return list(_state(request).faults)


@admin_router.delete("/faults")
async def clear_faults(request: Request) -> dict[str, bool]:
    state = _state(request)
    with state.lock:
        state.faults.clear()
    return {"cleared": True}


@admin_router.get("/calls")
async def calls(request: Request, route: Route | None = None) -> list[RecordedCall]:
    return _state(request).calls_to(route)


@admin_router.get("/counters")
async def counters(request: Request) -> dict[str, dict[str, int]]:
    state = _state(request)
    with state.lock:
        per_route: dict[str, int] = {}
        for call in state.calls:
            per_route[call.route.value] = per_route.get(call.route.value, 0) + 1
        return {"tokens": dict(state.token_counts), "calls": per_route}


@admin_router.get("/notifications")
async def notifications(request: Request, kind: str | None = None) -> list[RecordedNotification]:
    state = _state(request)
    with state.lock:
        return [n for n in state.notifications if kind is None or n.kind == kind]


@admin_router.post("/revocations")
async def seed_revocations(seed: RevocationSeed, request: Request) -> RevocationQueued:
    return RevocationQueued(queued=queue_revocations(_state(request), seed))


@admin_router.get("/revocations")
async def revocations(request: Request) -> dict[str, Any]:
    state = _state(request)
    with state.lock:
        return {
            "pending": [r.model_dump() for r in state.revocations.values()],
            "results": [r.model_dump() for r in state.revocation_results],
        }

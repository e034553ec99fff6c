"""The management API: ``/api/v1``, JSON, ``Authorization: Bearer <token>``.

Reading needs a viewer or operator token; acting (revoke, replay, purge) an
operator token. Every refusal is JSON, ``{"error": CODE, "detail": TEXT}``:
400 ``bad_request`` (a malformed serial, state, body...), 401
``unauthorized`` (no token, or one that is unknown, expired or revoked), 403
``forbidden`` (a viewer token on an operator route), 404 ``not_found`` (an
unknown transaction, serial, dead letter or generation), 429
``too_many_failures`` (too many wrong tokens from one address), 503
``unavailable`` (the store, the broker or Intune cannot do it now).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from scepline_shared.pipeline import Step
from scepline_shared.serials import parse_serial
from scepline_shared.store.models import RequestState

from .. import actions
from .context import AdminContext
from .errors import ApiError
from .security import FailureLimiter, client_address
from .tokens import Principal
from .views import (
    action_json,
    certificate_json,
    event_json,
    generation_json,
    jsonable,
    letter_json,
    outcome_json,
    refusal_json,
    request_json,
)

__all__ = ["api_router", "context", "parse_serial_or_400", "principal_from"]

MAX_LIMIT = 1000


def context(request: Request) -> AdminContext:
    return request.app.state.admin  # type: ignore[no-any-return]


def limiter(request: Request) -> FailureLimiter:
    return request.app.state.limiter  # type: ignore[no-any-return]


def refuse_while_limited(request: Request) -> str:
    """The client's address; 429 while it has presented too many wrong tokens
    (the API and the console's login count them together)."""
    address = client_address(request)
    wait = limiter(request).retry_after(address)
    if wait is not None:
        raise ApiError(
            429,
            "too_many_failures",
            f"too many wrong tokens from {address}; try again in {wait:.0f} s",
            headers={"retry-after": str(int(wait) + 1)},
        )
    return address


async def principal_from(request: Request, presented: str | None) -> Principal:
    """The token's principal; 401 without one or for a wrong one, 429 while
    the address has presented too many wrong ones."""
    if not presented:
        raise ApiError(401, "unauthorized", "a token is required: Authorization: Bearer <token>")
    address = refuse_while_limited(request)
    found = await context(request).tokens.principal(presented)
    if found is None:
        limiter(request).failed(address)
        raise ApiError(401, "unauthorized", "the token is not valid (unknown, expired or revoked)")
    return found


async def viewer(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if header and scheme.lower() != "bearer":
        raise ApiError(401, "unauthorized", "use Authorization: Bearer <token>")
    return await principal_from(request, presented.strip() or None)


async def operator(who: Annotated[Principal, Depends(viewer)]) -> Principal:
    if not who.is_operator:
        raise ApiError(
            403, "forbidden", f"{who.actor} is a viewer token; this needs an operator token"
        )
    return who


Viewer = Annotated[Principal, Depends(viewer)]
Operator = Annotated[Principal, Depends(operator)]


def actor_of(who: Principal) -> actions.Actor:
    return actions.Actor(who.actor, token_id=who.token_id)


def parse_serial_or_400(text: str) -> int:
    serial = parse_serial(text)
    if serial is None:
        raise ApiError(400, "bad_request", f"not a hexadecimal serial number: {text[:80]!r}")
    return serial


def _state(text: str | None) -> RequestState | None:
    if text is None or not text.strip():
        return None
    try:
        return RequestState(text.strip().upper())
    except ValueError:
        states = ", ".join(state.value for state in RequestState)
        raise ApiError(
            400, "bad_request", f"not a request state: {text[:40]!r}; one of {states}"
        ) from None


def _step(text: str | None) -> list[Step]:
    if text is None or not text.strip():
        return list(Step)
    try:
        return [Step(text.strip().lower())]
    except ValueError:
        steps = ", ".join(step.value for step in Step)
        raise ApiError(400, "bad_request", f"not a step: {text[:40]!r}; one of {steps}") from None


def _limit(value: int) -> int:
    if not 1 <= value <= MAX_LIMIT:
        raise ApiError(400, "bad_request", f"limit: from 1 to {MAX_LIMIT}")
    return value


def _check_id(text: str, what: str) -> str:
    if not text or len(text) > 255:
        raise ApiError(400, "bad_request", f"{what}: 1 to 255 characters")
    return text


class RevokeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        default="unspecified",
        max_length=64,
        description="RFC 5280 CRLReason, any case, e.g. keyCompromise or key-compromise",
    )


api_router = APIRouter(prefix="/api/v1", tags=["management"])


@api_router.get("/whoami", summary="The token the request was made with")
async def whoami(who: Viewer) -> dict[str, Any]:
    return {"token_id": who.token_id, "name": who.name, "role": who.role.value}


# -- requests ---------------------------------------------------------------------------


@api_router.get("/requests", summary="Requests in one state (or any), most recently changed first")
async def list_requests(
    request: Request,
    _who: Viewer,
    state: Annotated[str | None, Query(description="RECEIVED, VALIDATED, ...; any case")] = None,
    limit: int = 50,
) -> dict[str, Any]:
    chosen = _state(state)
    found = await actions.list_requests(context(request).repository, chosen, _limit(limit))
    return {
        "state": chosen.value if chosen else None,
        "requests": [request_json(item) for item in found],
    }


@api_router.get(
    "/requests/{transaction_id:path}",
    summary="A request with its history (and refusals of its transaction id)",
)
async def show_request(request: Request, transaction_id: str, _who: Viewer) -> dict[str, Any]:
    detail = await actions.request_detail(
        context(request).repository, _check_id(transaction_id, "transaction id")
    )
    actions_taken = await context(request).admin.actions(
        target_kind="request", target=transaction_id, limit=50
    )
    return {
        "transaction_id": detail.transaction_id,
        "request": request_json(detail.request) if detail.request else None,
        "history": [event_json(event) for event in detail.history],
        "refusals": [refusal_json(refusal) for refusal in detail.refusals],
        "operator_actions": [action_json(action) for action in actions_taken],
    }


# -- certificates ---------------------------------------------------------------------


@api_router.get("/certificates", summary="Certificates whose subject contains q, newest first")
async def find_certificates(
    request: Request,
    _who: Viewer,
    q: Annotated[str, Query(description="part of the subject DN, e.g. a device name")] = "",
    limit: int = actions.FIND_LIMIT,
) -> dict[str, Any]:
    if len(q) > 255:
        raise ApiError(400, "bad_request", "q: at most 255 characters")
    found = await actions.find_certificates(context(request).repository, q, limit=_limit(limit))
    return {"q": q, "certificates": [certificate_json(item) for item in found]}


@api_router.get(
    "/certificates/{serial}", summary="One certificate; status valid, revoked or expired"
)
async def show_certificate(request: Request, serial: str, _who: Viewer) -> dict[str, Any]:
    ctx = context(request)
    found = await actions.certificate(ctx.repository, parse_serial_or_400(serial))
    shown = certificate_json(found)
    shown["operator_actions"] = [
        action_json(action)
        for action in await ctx.admin.actions(target_kind="certificate", target=found.serial)
    ]
    return shown


@api_router.get(
    "/certificates/{serial}/{encoding}",
    summary="Download a certificate: pem or der",
    response_class=Response,
)
async def download_certificate(
    request: Request, serial: str, encoding: str, _who: Viewer
) -> Response:
    return await certificate_download(context(request), serial, encoding)


async def certificate_download(ctx: AdminContext, serial: str, encoding: str) -> Response:
    if encoding not in ("pem", "der"):
        raise ApiError(404, "not_found", f"no such download: {encoding[:20]!r} (pem or der)")
    found = await actions.certificate(ctx.repository, parse_serial_or_400(serial))
    if found.der is None:
        raise ApiError(
            404, "not_found", f"serial {found.serial} is voided: no certificate was stored"
        )
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    if encoding == "pem":
        body = x509.load_der_x509_certificate(found.der).public_bytes(Encoding.PEM)
        kind = "application/x-pem-file"
    else:
        body, kind = found.der, "application/pkix-cert"
    return Response(
        body,
        media_type=kind,
        headers={"content-disposition": f'attachment; filename="{found.serial}.{encoding}"'},
    )


@api_router.post(
    "/certificates/{serial}/revoke",
    summary="Revoke a certificate (operator); the next CRL lists it",
)
async def revoke_certificate(
    request: Request, serial: str, who: Operator, body: RevokeBody | None = None
) -> dict[str, Any]:
    ctx = context(request)
    number = parse_serial_or_400(serial)
    reason = actions.reason_name((body or RevokeBody()).reason)
    done = await actions.revoke_certificate(
        ctx.repository, number, reason, actor=actor_of(who), admin=ctx.admin
    )
    return {
        "certificate": certificate_json(done.certificate),
        "already_revoked": done.already,
        "crl_within_seconds": ctx.settings.crl_check_interval_seconds,
    }


# -- dead letters ---------------------------------------------------------------------


@api_router.get("/dead-letters", summary="Dead letters of every step (or one)")
async def list_dead_letters(
    request: Request, _who: Viewer, step: str | None = None
) -> dict[str, Any]:
    ctx = context(request)
    steps = _step(step)
    async with ctx.dead_letter_turn:
        found = await actions.letters(
            ctx.settings, ctx.repository, ctx.broker, steps, reasons=True, limit=MAX_LIMIT
        )
    return {
        "in_process": ctx.in_process,
        "dead_letters": [letter_json(letter) for chosen in found.values() for letter in chosen],
    }


@api_router.get("/dead-letters/{letter_id:path}", summary="One dead letter")
async def show_dead_letter(request: Request, letter_id: str, _who: Viewer) -> dict[str, Any]:
    ctx = context(request)
    async with ctx.dead_letter_turn:
        found = await actions.find_letters(
            ctx.settings,
            ctx.repository,
            ctx.broker,
            list(Step),
            [_check_id(letter_id, "dead letter id")],
            reasons=True,
        )
    [letter] = [letter for chosen in found.values() for letter in chosen][:1]
    return letter_json(letter)


async def act_on_letter(
    ctx: AdminContext, action: Literal["replay", "purge"], letter_id: str, who: Principal
) -> list[actions.LetterOutcome]:
    _check_id(letter_id, "dead letter id")
    async with ctx.dead_letter_turn:
        try:
            return await actions.act_on_letters(
                ctx.settings,
                ctx.repository,
                ctx.broker,
                action,
                [letter_id],
                actor=actor_of(who),
                admin=ctx.admin,
            )
        except SystemExit as broken:  # the Intune provider's configuration
            raise ApiError(503, "unavailable", str(broken)) from None


@api_router.post(
    "/dead-letters/{letter_id:path}/replay",
    summary="Send a dead letter back to its step (operator)",
)
async def replay_dead_letter(request: Request, letter_id: str, who: Operator) -> dict[str, Any]:
    outcomes = await act_on_letter(context(request), "replay", letter_id, who)
    return {"outcomes": [outcome_json(outcome) for outcome in outcomes]}


@api_router.post(
    "/dead-letters/{letter_id:path}/purge",
    summary="Give up on a dead letter: its request ends FAILED (operator)",
)
async def purge_dead_letter(request: Request, letter_id: str, who: Operator) -> dict[str, Any]:
    outcomes = await act_on_letter(context(request), "purge", letter_id, who)
    return {"outcomes": [outcome_json(outcome) for outcome in outcomes]}


# -- CAs, health, the dashboard, actions ------------------------------------------------------


@api_router.get("/cas", summary="CA generations: active, staged, previous; latest CRL of each")
async def list_cas(request: Request, _who: Viewer) -> dict[str, Any]:
    found = await context(request).cas()
    active = next((g.number for g in found if g.status == "active"), None)
    staged = [g.number for g in found if g.status == "staged"]
    return {
        "active": active,
        "rollover": {"staged": staged, "pending": bool(staged)},
        "generations": [generation_json(generation) for generation in found],
    }


def _generation(text: str) -> int:
    if not text.isdigit() or len(text) > 6:
        raise ApiError(400, "bad_request", f"not a generation number: {text[:20]!r}")
    return int(text)


async def generation_file(ctx: AdminContext, generation: str, what: str) -> Response:
    number = _generation(generation)
    if what not in ("crl", "certificate"):
        raise ApiError(404, "not_found", f"no such file: {what[:20]!r} (crl or certificate)")
    found = {g.number: g for g in await ctx.cas()}.get(number)
    if found is None:
        raise ApiError(404, "not_found", f"no CA generation {number}")
    if what == "certificate":
        return Response(
            found.ca.pem,
            media_type="application/x-pem-file",
            headers={"content-disposition": f'attachment; filename="ca-{number}.pem"'},
        )
    if found.crl is None:
        raise ApiError(404, "not_found", f"generation {number} has published no CRL")
    return Response(
        found.crl.der,
        media_type="application/pkix-crl",
        headers={"content-disposition": f'attachment; filename="ca-{number}.crl"'},
    )


@api_router.get(
    "/cas/{generation}/{what}",
    summary="A generation's CA certificate (PEM) or latest CRL (DER)",
    response_class=Response,
)
async def ca_file(request: Request, generation: str, what: str, _who: Viewer) -> Response:
    return await generation_file(context(request), generation, what)


@api_router.get("/health", summary="Database, broker, HSM, Intune, serving processes, CA expiry")
async def health(request: Request, _who: Viewer) -> JSONResponse:
    found = await context(request).health()
    return JSONResponse(jsonable(found))


@api_router.get("/dashboard", summary="The console's figures")
async def dashboard(request: Request, _who: Viewer) -> JSONResponse:
    return JSONResponse(jsonable(await context(request).dashboard()))


@api_router.get("/actions", summary="Operator actions, newest first (on one target if given)")
async def list_actions(
    request: Request,
    _who: Viewer,
    target_kind: str | None = None,
    target: str | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    found = await context(request).admin.actions(
        target_kind=target_kind, target=target, limit=_limit(limit)
    )
    return {"actions": [action_json(action) for action in found]}

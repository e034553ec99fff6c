"""The operator console: server-rendered pages (Jinja2) on the admin port.

Readable without JavaScript; ``/static/console.js`` only adds an auto-refresh
of the dashboard and local times. A session is opened by logging in with an
API token (``/login``: one password field); every form carries the session's
CSRF token and every POST without it is refused (403). Actions that change
something (replay, purge, revoke) ask for confirmation on a page of their own
and need an operator token; each names its actor in the histories.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from scepline_shared.pipeline import Step
from scepline_shared.store.certificates import REVOCATION_REASON_NAMES
from scepline_shared.store.models import RequestState

from .. import actions
from .api import (
    act_on_letter,
    actor_of,
    certificate_download,
    context,
    generation_file,
    limiter,
    parse_serial_or_400,
    refuse_while_limited,
)
from .errors import ApiError
from .security import LOGIN_COOKIE, SESSION_COOKIE, Session, SessionSigner, is_https
from .tokens import Principal
from .views import certificate_json, letter_json

__all__ = ["console_router", "render_error", "templates"]

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))


def _datetime(value: datetime | str | None) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC)


def when(value: datetime | str | None) -> str:
    """A time as operators read it in UTC: 2026-12-08 14:03:59 UTC."""
    at = _datetime(value)
    return "-" if at is None else f"{at:%Y-%m-%d %H:%M:%S} UTC"


def hour(value: datetime | str | None) -> str:
    at = _datetime(value)
    return "" if at is None else f"{at:%H}h"


def ago(value: datetime | str | None) -> str:
    """How long ago (or ahead): 5 s ago, 3 min ago, 2 h ago, in 120 d."""
    at = _datetime(value)
    if at is None:
        return "-"
    seconds = (datetime.now(UTC) - at).total_seconds()
    future, seconds = seconds < 0, abs(seconds)
    if seconds < 90:
        text = f"{seconds:.0f} s"
    elif seconds < 90 * 60:
        text = f"{seconds / 60:.0f} min"
    elif seconds < 48 * 3600:
        text = f"{seconds / 3600:.0f} h"
    else:
        text = f"{seconds / 86400:.0f} d"
    return f"in {text}" if future else f"{text} ago"


templates.env.filters.update(when=when, hour=hour, ago=ago)
MAX_FORM_BYTES = 16 * 1024

console_router = APIRouter(include_in_schema=False)


class LoginNeeded(Exception):
    """No valid session: the browser is sent to the login page."""


def signer(request: Request) -> SessionSigner:
    return request.app.state.sessions  # type: ignore[no-any-return]


async def session_of(request: Request) -> tuple[Principal, Session]:
    session = signer(request).session(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise LoginNeeded
    who = await context(request).tokens.by_id(session.token_id)
    if who is None:  # revoked or expired since the login
        raise LoginNeeded
    return who, session


def page(
    request: Request,
    template: str,
    values: dict[str, Any],
    *,
    status: int = 200,
    who: Principal | None = None,
    session: Session | None = None,
) -> HTMLResponse:
    csrf = signer(request).csrf_token(session.session_id) if session is not None else None
    return templates.TemplateResponse(
        request,
        template,
        {"who": who, "csrf": csrf, "path": request.url.path, **values},
        status_code=status,
    )


def render_error(
    request: Request, status: int, title: str, detail: str, headers: dict[str, str] | None = None
) -> Response:
    response = templates.TemplateResponse(
        request,
        "error.html",
        {
            "who": None,
            "csrf": None,
            "path": request.url.path,
            "status": status,
            "title": title,
            "detail": detail,
        },
        status_code=status,
    )
    for name, value in (headers or {}).items():
        if name.lower() != "www-authenticate":
            response.headers[name] = value
    return response


async def form_of(request: Request) -> dict[str, str]:
    """An urlencoded form (the console's only kind), first value of each field."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ApiError(413, "too_large", "form too large")
    if not body:
        return {}  # no fields at all: refused for what is missing (the CSRF token)
    if kind != "application/x-www-form-urlencoded":
        raise ApiError(415, "unsupported_media_type", "the console's forms are urlencoded")
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "bad_request", "unreadable form") from None
    return {name: values[0] for name, values in fields.items()}


async def posted(request: Request, *, operator: bool) -> tuple[Principal, dict[str, str]]:
    """A console POST: a session, its CSRF token in the form, the role."""
    who, session = await session_of(request)
    form = await form_of(request)
    if not signer(request).csrf_ok(session.session_id, form.get("csrf")):
        raise ApiError(
            403,
            "forbidden",
            "the form was refused: its CSRF token is missing or wrong (reload the page and "
            "try again)",
        )
    if operator and not who.is_operator:
        raise ApiError(403, "forbidden", f"{who.actor} is a viewer: this needs an operator token")
    return who, form


def safe_next(target: str | None) -> str:
    """Only a path of this site: never another origin after a login."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _cookie_options(request: Request) -> dict[str, Any]:
    return {"httponly": True, "samesite": "strict", "secure": is_https(request), "path": "/"}


# -- logging in and out ---------------------------------------------------------------------


@console_router.get("/login")
async def login_form(request: Request, next: str = "/", failed: str = "") -> Response:
    nonce = secrets.token_urlsafe(16)
    response = page(
        request,
        "login.html",
        {"next": safe_next(next), "login_csrf": nonce, "failed": bool(failed)},
    )
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=3600, **_cookie_options(request))
    return response


@console_router.post("/login")
async def login(request: Request) -> Response:
    form = await form_of(request)
    expected = request.cookies.get(LOGIN_COOKIE)
    if not expected or not secrets.compare_digest(expected, form.get("csrf", "")):
        raise ApiError(
            403,
            "forbidden",
            "the login form was refused: its CSRF token is missing or wrong (reload the page)",
        )
    address = refuse_while_limited(request)
    target = safe_next(form.get("next"))
    who = await context(request).tokens.principal(form.get("token", ""))
    if who is None:
        limiter(request).failed(address)
        return RedirectResponse(
            "/login?" + urlencode({"next": target, "failed": "1"}), status_code=303
        )
    _, cookie = signer(request).new_session(who.token_id)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE, cookie, max_age=int(signer(request).lifetime), **_cookie_options(request)
    )
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


@console_router.post("/logout")
async def logout(request: Request) -> Response:
    await posted(request, operator=False)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# -- the pages ------------------------------------------------------------------------------


@console_router.get("/")
async def dashboard(request: Request) -> Response:
    who, session = await session_of(request)
    figures = await context(request).dashboard()
    peak = max((entry["issued"] for entry in figures["issued_per_hour"]), default=0)
    return page(
        request,
        "dashboard.html",
        {"figures": figures, "peak": max(peak, 1), "refresh": 30},
        who=who,
        session=session,
    )


@console_router.get("/requests")
async def requests_page(request: Request, state: str = "", limit: int = 100) -> Response:
    who, session = await session_of(request)
    chosen = None
    if state:
        try:
            chosen = RequestState(state.strip().upper())
        except ValueError:
            raise ApiError(400, "bad_request", f"not a request state: {state[:40]!r}") from None
    limit = min(max(limit, 1), 1000)
    found = await actions.list_requests(context(request).repository, chosen, limit)
    return page(
        request,
        "requests.html",
        {
            "requests": found,
            "state": chosen.value if chosen else "",
            "states": [s.value for s in RequestState],
            "limit": limit,
        },
        who=who,
        session=session,
    )


@console_router.get("/requests/{transaction_id:path}")
async def request_page(request: Request, transaction_id: str) -> Response:
    who, session = await session_of(request)
    ctx = context(request)
    detail = await actions.request_detail(ctx.repository, transaction_id[:255])
    certificate = None
    if detail.request is not None and detail.request.cert_serial:
        certificate = await ctx.repository.get_certificate(detail.request.cert_serial)
    from ..admin import message_type_name

    return page(
        request,
        "request.html",
        {
            "detail": detail,
            "certificate": certificate_json(certificate) if certificate else None,
            "actions": await ctx.admin.actions(target_kind="request", target=transaction_id),
            "message_type_name": message_type_name,
        },
        who=who,
        session=session,
    )


@console_router.get("/dead-letters")
async def dead_letters_page(request: Request, done: str = "", id: str = "") -> Response:
    who, session = await session_of(request)
    ctx = context(request)
    async with ctx.dead_letter_turn:
        found = await actions.letters(
            ctx.settings, ctx.repository, ctx.broker, list(Step), reasons=True
        )
    shown = [letter_json(letter) for chosen in found.values() for letter in chosen]
    notice = {
        "replayed": f"Dead letter {id} replayed: its request is the pipeline's again.",
        "purged": f"Dead letter {id} purged: its request ended FAILED.",
    }.get(done)
    return page(
        request,
        "dead_letters.html",
        {"letters": shown, "in_process": ctx.in_process, "notice": notice},
        who=who,
        session=session,
    )


_LETTER_ACTIONS = {
    "replay": (
        "Replay dead letter",
        "Send it back to its step: the request is the pipeline's again (with the "
        "in-process broker, the running scepline re-queues it within a sweep).",
    ),
    "purge": (
        "Purge dead letter",
        "Give up on it: its request ends FAILED, a certificate signed for it but never "
        "released is revoked, and Intune is told. This cannot be undone.",
    ),
}


@console_router.get("/dead-letters/{letter_id:path}/{action}")
async def confirm_letter(request: Request, letter_id: str, action: str) -> Response:
    who, session = await session_of(request)
    if action not in _LETTER_ACTIONS:
        raise ApiError(404, "not_found", f"no such action: {action[:20]!r}")
    ctx = context(request)
    async with ctx.dead_letter_turn:
        found = await actions.find_letters(
            ctx.settings, ctx.repository, ctx.broker, list(Step), [letter_id[:255]], reasons=True
        )
    letter = next(letter for chosen in found.values() for letter in chosen)
    title, explanation = _LETTER_ACTIONS[action]
    return page(
        request,
        "confirm.html",
        {
            "title": title,
            "explanation": explanation,
            "subject": letter_json(letter),
            "action_url": f"/dead-letters/{quote(letter_id, safe='')}/{action}",
            "button": action.capitalize(),
            "danger": action == "purge",
            "cancel": "/dead-letters",
            "reasons": None,
        },
        who=who,
        session=session,
    )


@console_router.post("/dead-letters/{letter_id:path}/{action}")
async def act_on_letter_page(request: Request, letter_id: str, action: str) -> Response:
    if action not in _LETTER_ACTIONS:
        raise ApiError(404, "not_found", f"no such action: {action[:20]!r}")
    who, _ = await posted(request, operator=True)
    await act_on_letter(context(request), action, letter_id, who)  # type: ignore[arg-type]
    done = "replayed" if action == "replay" else "purged"
    return RedirectResponse(
        "/dead-letters?" + urlencode({"done": done, "id": letter_id}), status_code=303
    )


@console_router.get("/certificates")
async def certificates_page(request: Request, q: str = "") -> Response:
    who, session = await session_of(request)
    found = None
    if q.strip():
        found = await actions.find_certificates(context(request).repository, q[:255])
    return page(
        request,
        "certificates.html",
        {
            "q": q,
            "certificates": [certificate_json(c) for c in found] if found is not None else None,
            "limit": actions.FIND_LIMIT,
        },
        who=who,
        session=session,
    )


@console_router.get("/certificates/{serial}")
async def certificate_page(request: Request, serial: str, done: str = "") -> Response:
    who, session = await session_of(request)
    ctx = context(request)
    found = await actions.certificate(ctx.repository, parse_serial_or_400(serial))
    return page(
        request,
        "certificate.html",
        {
            "certificate": certificate_json(found),
            "actions": await ctx.admin.actions(target_kind="certificate", target=found.serial),
            "notice": "Revoked: the next CRL lists it." if done == "revoked" else None,
            "crl_interval": ctx.settings.crl_check_interval_seconds,
        },
        who=who,
        session=session,
    )


@console_router.get("/certificates/{serial}/revoke")
async def confirm_revoke(request: Request, serial: str) -> Response:
    who, session = await session_of(request)
    found = await actions.certificate(context(request).repository, parse_serial_or_400(serial))
    return page(
        request,
        "confirm.html",
        {
            "title": "Revoke certificate",
            "explanation": "Revoke it for good: the signers publish a CRL listing it within "
            f"{context(request).settings.crl_check_interval_seconds:g} s and OCSP answers "
            "revoked. A revocation cannot be undone.",
            "subject": certificate_json(found),
            "action_url": f"/certificates/{found.serial}/revoke",
            "button": "Revoke",
            "danger": True,
            "cancel": f"/certificates/{found.serial}",
            "reasons": list(REVOCATION_REASON_NAMES),
        },
        who=who,
        session=session,
    )


@console_router.post("/certificates/{serial}/revoke")
async def revoke(request: Request, serial: str) -> Response:
    who, form = await posted(request, operator=True)
    ctx = context(request)
    number = parse_serial_or_400(serial)
    done = await actions.revoke_certificate(
        ctx.repository,
        number,
        form.get("reason", "unspecified"),
        actor=actor_of(who),
        admin=ctx.admin,
    )
    return RedirectResponse(
        f"/certificates/{done.certificate.serial}?done=revoked", status_code=303
    )


@console_router.get("/certificates/{serial}/{encoding}")
async def download(request: Request, serial: str, encoding: str) -> Response:
    await session_of(request)
    return await certificate_download(context(request), serial, encoding)


@console_router.get("/cas")
async def cas_page(request: Request) -> Response:
    who, session = await session_of(request)
    return page(
        request, "cas.html", {"generations": await context(request).cas()}, who=who, session=session
    )


@console_router.get("/cas/{generation}/{what}")
async def ca_download(request: Request, generation: str, what: str) -> Response:
    await session_of(request)
    return await generation_file(context(request), generation, what)


@console_router.get("/health")
async def health_page(request: Request) -> Response:
    who, session = await session_of(request)
    return page(
        request,
        "health.html",
        {"health": await context(request).health()},
        who=who,
        session=session,
    )

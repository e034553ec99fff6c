"""Operator commands: inspect requests; revoke certificates; list, show, replay
and purge dead letters; prune the store.

Each command runs one action of ``actions.py`` (which the management API and
the console run too) and prints what it returns; see there for what the
actions do with either broker.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence

from scepline_shared.messages import DeadLetter
from scepline_shared.pipeline import Step
from scepline_shared.settings import Settings
from scepline_shared.store.models import RequestState
from scepline_shared.store.views import CertificateView, EventView, RequestView

from . import actions
from .actions import ActionError, Replayed, purge, replay
from .connections import Runtime, runtime
from .errors import CommandError

__all__ = [
    "Replayed",
    "dead_letters",
    "find_certificates",
    "list_requests",
    "prune_store",
    "purge",
    "replay",
    "revoke_certificate",
    "show_certificate",
    "show_request",
]


@contextlib.contextmanager
def _refusals_as_command_errors():  # type: ignore[no-untyped-def]
    """What an action refuses is one line: exit 1 for "not there", 2 for bad input."""
    try:
        yield
    except ActionError as refused:
        raise CommandError(str(refused), status=2 if refused.kind == "bad_input" else 1) from None


async def show_request(settings: Settings, transaction_id: str) -> int:
    """A request's state and history, and any refusal of that transaction id
    before it was recorded (which only the store's bounded ring remembers)."""
    async with runtime(settings, with_broker=False, patience=0) as rt:
        with _refusals_as_command_errors():
            detail = await actions.request_detail(rt.repository, transaction_id)
    if detail.candidates:
        keys = "\n  ".join(f"{r.transaction_id}  {r.state.value}" for r in detail.candidates)
        print(f"{transaction_id} names {len(detail.candidates)} requests; show one of:\n  {keys}")
        return 0
    request, refusals = detail.request, detail.refusals
    if request is not None:
        _print_request(request, detail.history)
    if refusals:
        from scepline_shared.scep import FailInfo

        if request is None:
            print(f"transaction  {transaction_id}")
            print("state        not recorded: refused before it was recorded")
        print("refused" + ("" if request is None else " (messages not recorded)") + ":")
        for refusal in refusals:
            print(
                f"  {refusal.at.isoformat()}  {message_type_name(refusal.message_type)}  failInfo "
                f"{FailInfo(refusal.fail_info).rfc_name}  {refusal.reason}"
            )
    return 0


def message_type_name(value: int | None) -> str:
    from scepline_shared.scep import MessageType

    try:
        return MessageType(value).name
    except ValueError:
        return f"messageType {value}"


def _print_request(request: RequestView, history: Sequence[EventView]) -> None:
    print(f"transaction  {request.transaction_id}")
    print(f"endpoint     {request.endpoint}")
    print(f"state        {request.state}  (notify: {request.notify_state})")
    print(f"subject      {request.subject}")
    if request.renewal_of_serial:
        print(f"renews       serial {request.renewal_of_serial}")
    if request.cert_serial:
        print(f"certificate  serial {request.cert_serial}")
    if request.fail_reason:
        print(f"failure      {request.fail_reason} (failInfo {request.fail_info})")
    if request.parked_at:
        print(f"parked       since {request.parked_at.isoformat()} (see `scepline dlq list`)")
    for event in history:
        print(
            f"  {event.at.isoformat()}  {event.from_state or '-'} -> {event.to_state}"
            f"  {event.detail}"
        )


async def list_requests(
    settings: Settings, state: RequestState, limit: int, *, endpoint: str | None = None
) -> int:
    """Requests in one state (at one endpoint), most recently changed first: who
    is PENDING now. One a line: when it last changed, its transaction id (what
    `request show|approve|reject` take), its endpoint, its subject."""
    async with runtime(settings, with_broker=False, patience=0) as rt:
        found = await actions.list_requests(rt.repository, state, limit, endpoint=endpoint)
    for request in found:
        parked = "  parked" if request.parked_at is not None else ""
        print(
            f"{request.updated_at:%Y-%m-%d %H:%M:%S}  {request.transaction_id}  "
            f"{request.endpoint}  {request.subject}{parked}"
        )
    more = f" (the {limit} most recent; --limit for more)" if len(found) == limit else ""
    where = "" if endpoint is None else f" at endpoint {endpoint}"
    print(f"{len(found)} request(s) in {state.value}{where}{more}")
    return 0


async def show_certificate(settings: Settings, serial: int) -> int:
    async with runtime(settings, with_broker=False, patience=0) as rt:
        with _refusals_as_command_errors():
            certificate = await actions.certificate(rt.repository, serial)
    print(f"serial       {certificate.serial}")
    print(f"subject      {certificate.subject}")
    print(f"issuer       {certificate.issuer}")
    print(
        f"valid        {certificate.not_before.isoformat()} .. {certificate.not_after.isoformat()}"
    )
    print(f"transaction  {certificate.transaction_id}  (scepline request show)")
    print(f"endpoint     {certificate.endpoint}")
    print(f"status       {_status(certificate)}")
    return 0


def _status(certificate: CertificateView) -> str:
    if certificate.is_voided:
        return "voided: claimed for signing, never stored; revoked (superseded)"
    if certificate.revoked_at is None:
        return "not revoked"
    return (
        f"revoked at {certificate.revoked_at.isoformat()} ({actions.revocation_label(certificate)})"
    )


async def find_certificates(
    settings: Settings, subject_part: str, *, endpoint: str | None = None
) -> int:
    with _refusals_as_command_errors():
        actions.check_search(subject_part, endpoint=endpoint)  # before the store is opened
    async with runtime(settings, with_broker=False, patience=0) as rt:
        found = await actions.find_certificates(rt.repository, subject_part, endpoint=endpoint)
    for certificate in found:
        status = actions.certificate_status(certificate)
        print(
            f"{certificate.serial}  {certificate.not_before:%Y-%m-%d}  {status:<8} "
            f"{certificate.endpoint}  {certificate.subject}"
        )
    more = " (the newest; narrow the search)" if len(found) == actions.FIND_LIMIT else ""
    print(f"{len(found)} certificate(s){more}")
    return 0 if found else 1


async def revoke_certificate(settings: Settings, serial: int, reason: str) -> int:
    """Record the revocation (the signers publish the CRL with it); revoking
    again changes nothing and says when and why it was done."""
    async with runtime(settings, with_broker=False, patience=0) as rt:
        with _refusals_as_command_errors():
            done = await actions.revoke_certificate(
                rt.repository, serial, reason, actor=actions.command_line_actor(), admin=rt.admin
            )
    certificate = done.certificate
    print(f"certificate {certificate.serial} ({certificate.subject})")
    if done.already:
        print(
            f"already {_status(certificate)}; unchanged (a revocation's time and reason "
            "stay as the CRLs published them)"
        )
        return 0
    assert certificate.revoked_at is not None
    print(
        f"revoked at {certificate.revoked_at.isoformat()} "
        f"({actions.revocation_label(certificate)}); OCSP answers revoked and the next CRL "
        f"lists it within {settings.crl_check_interval_seconds:g} s "
        "(SCEPLINE_CRL_CHECK_INTERVAL_SECONDS)"
    )
    return 0


async def prune_store(settings: Settings, older_than_days: int) -> int:
    """Retention: forget final requests and superseded CRLs older than N days."""
    async with runtime(settings, with_broker=False, patience=0) as rt:
        pruned = await actions.prune(rt.repository, older_than_days)
    cutoff = pruned.cutoff
    print(f"deleted {pruned.requests} final request(s) untouched since {cutoff:%Y-%m-%d %H:%M} UTC")
    print("  (and their history; parked requests and issued certificates are kept)")
    print(f"deleted {pruned.crls} superseded CRL(s) expired before then (each CA's latest is kept)")
    print(f"deleted {pruned.challenges} one-time challenge(s) used or expired before then")
    return 0


async def dead_letters(
    settings: Settings, action: str, steps: Sequence[Step], ids: Sequence[str] | None
) -> int:
    in_process = settings.broker_url.startswith("memory://")
    actor = actions.command_line_actor()
    async with runtime(settings, with_broker=not in_process, patience=0) as rt:
        with _refusals_as_command_errors():
            if ids is not None:
                await actions.find_letters(settings, rt.repository, rt.broker, steps, ids)
        if action in ("replay", "purge"):
            helpers = actions.dead_letter_helpers(settings, rt.repository)
        else:
            helpers = contextlib.nullcontext(None)  # type: ignore[assignment]
        async with helpers as acting:
            if in_process:
                await _parked_requests(rt, settings, action, steps, ids, acting, actor)
                return 0
            for step in steps:
                found = (await actions.letters(settings, rt.repository, rt.broker, [step]))[step]
                chosen = [letter for letter in found if ids is None or letter.id in ids]
                if action == "list":
                    _print_list(step, found)
                elif action == "show":
                    for letter in chosen:
                        assert letter.message is not None
                        shown = {**_as_dict(letter.message), "resolved": letter.resolved}
                        print(json.dumps(shown, indent=2, default=str))
                elif action == "replay":
                    done = await replay(
                        rt.broker, rt.repository, step, ids=ids, actor=actor, admin=rt.admin
                    )
                    print(
                        f"{step.value}: replayed {done.replayed}, dropped {done.dropped} resolved"
                    )
                elif action == "purge":
                    assert acting is not None
                    purged = await actions.purge_letters(
                        rt.broker,
                        rt.repository,
                        step,
                        ids=ids,
                        report_failure=acting.report_failure,
                        actor=actor,
                        admin=rt.admin,
                    )
                    for serial in purged.revoked:
                        print(f"  revoked certificate {serial}: signed, never released")
                    final = len([letter for letter in chosen if letter.resolved])
                    note = f" ({final} resolved: their requests stay as they were)" if final else ""
                    print(f"{step.value}: purged {purged.count}{note}")
        return 0


async def _parked_requests(
    rt: Runtime,
    settings: Settings,
    action: str,
    steps: Sequence[Step],
    ids: Sequence[str] | None,
    acting: actions.DeadLetterHelpers | None,
    actor: actions.Actor,
) -> None:
    found = await actions.letters(settings, rt.repository, rt.broker, steps)
    parked = sorted(
        (letter.request for chosen in found.values() for letter in chosen if letter.request),
        key=lambda request: (request.parked_at, request.id),
    )
    parked = [request for request in parked if ids is None or request.transaction_id in ids]
    print(f"{len(parked)} parked request(s) (in-process broker: ids are transaction ids)")
    for request in parked:
        if action in ("list", "show"):
            _print_parked(request, full=action == "show")
        elif action == "replay":
            assert acting is not None
            done = await actions.replay_parked(
                rt.repository, request, acting.notify, actor=actor, admin=rt.admin
            )
            if done.outcome == "replayed":
                print(f"  replayed {request.transaction_id}: the running scepline re-queues it")
            elif done.outcome == "parked-again":
                print(
                    f"  {request.transaction_id}: still not delivered ({done.detail}); parked again"
                )
            else:
                print(f"  replayed {request.transaction_id}: {done.detail}")
        elif action == "purge":
            assert acting is not None
            done = await actions.purge_parked(
                rt.repository, request, acting.report_failure, actor=actor, admin=rt.admin
            )
            if done.revoked_serial is not None:
                print(f"  revoked certificate {done.revoked_serial}: signed, never released")
            print(f"  purged {request.transaction_id}: now FAILED")


def _print_parked(request: RequestView, *, full: bool) -> None:
    step = actions.parked_at_step(request)
    parked_at = request.parked_at.isoformat() if request.parked_at else "-"
    print(f"  {request.transaction_id}  {parked_at}  {step.value if step else '-'}")
    if full:
        print(f"    state {request.state}, notify {request.notify_state}, {request.subject}")


def _print_list(step: Step, found: Sequence[actions.Letter]) -> None:
    resolved = [letter for letter in found if letter.resolved]
    note = " (their requests finished anyway: replay drops them)" if resolved else ""
    print(f"{step.value}: {len(found)} dead letter(s), {len(resolved)} resolved{note}")
    for letter in found:
        transaction = letter.transaction_id or "(unreadable)"
        status = "resolved" if letter.resolved else "waiting "
        assert letter.dead_at is not None
        print(
            f"  {letter.id}  {letter.dead_at.isoformat()}  {status}  {transaction}  {letter.reason}"
        )


def _as_dict(letter: DeadLetter) -> dict[str, object]:
    return {
        "id": letter.id,
        "step": letter.step.value,
        "dead_at": letter.dead_at,
        "reason": letter.reason,
        "message": letter.message.model_dump() if letter.message else None,
        "raw": letter.raw.decode(errors="replace") if letter.message is None else None,
    }

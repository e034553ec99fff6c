"""Operator commands: inspect requests; revoke certificates; list, show, replay
and purge dead letters.

With RabbitMQ the dead letters are the messages in each step's DLQ. The
in-process broker of ``scepline up`` lives inside that process, so for it the
commands work on what the store knows: requests parked because their message
was dead-lettered. Replaying unparks them and the running process's sweep
re-queues them (a notification for a certificate released already is sent by
the command itself: no step is left to re-queue). Purging gives up on a
request: it ends FAILED, so the device gets a clear answer instead of PENDING
forever; a certificate signed for it but never released is revoked, and with
the Intune provider Intune gets a failureNotification for a request it had
validated.

A dead letter whose request finished anyway is *resolved*
(``scepline_ingress.dead_letters``): listed as such, dropped by replay rather
than sent back, and purged without touching its final request.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from scepline_shared.broker.base import Broker
from scepline_shared.messages import DeadLetter
from scepline_shared.pipeline import Step, StepHandler, Transient, resume_step
from scepline_shared.settings import Settings
from scepline_shared.store.certificates import REVOCATION_REASON_NAMES
from scepline_shared.store.models import RequestState
from scepline_shared.store.repository import REFUSALS_KEPT, RequestRepository
from scepline_shared.store.views import CertificateView, EventView, RequestView

from .connections import Runtime, runtime
from .errors import CommandError

if TYPE_CHECKING:
    from scepline_notifier.main import FailureReporter

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


async def show_request(settings: Settings, transaction_id: str) -> int:
    """A request's state and history, and any refusal of that transaction id
    before it was recorded (which only the store's bounded ring remembers)."""
    async with runtime(settings, with_broker=False, patience=0) as rt:
        request = await rt.repository.get(transaction_id)
        if request is None:
            # The client's transactionID of a request whose key adds a renewal
            # or endpoint suffix (`request_key`).
            named = await rt.repository.by_client_transaction(transaction_id)
            if len(named) > 1:
                keys = "\n  ".join(f"{r.transaction_id}  {r.state.value}" for r in named)
                print(f"{transaction_id} names {len(named)} requests; show one of:\n  {keys}")
                return 0
            request = named[0] if named else None
        refusals = await rt.repository.refusals(transaction_id)
        if request is not None:
            _print_request(request, await rt.repository.history(request.transaction_id))
    if request is None and not refusals:
        raise CommandError(
            f"no request with transaction id {transaction_id!r}, and no refusal of it among "
            f"the last {REFUSALS_KEPT} (older ones are only in the logs)"
        )
    if refusals:
        from scepline_shared.scep import FailInfo

        if request is None:
            print(f"transaction  {transaction_id}")
            print("state        not recorded: refused before it was recorded")
        print("refused" + ("" if request is None else " (messages not recorded)") + ":")
        for refusal in refusals:
            print(
                f"  {refusal.at.isoformat()}  {_message_type(refusal.message_type)}  failInfo "
                f"{FailInfo(refusal.fail_info).rfc_name}  {refusal.reason}"
            )
    return 0


def _message_type(value: int | None) -> str:
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
        found = await rt.repository.in_state(state, limit=limit, endpoint=endpoint)
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
        certificate = await rt.repository.get_certificate(serial)
    if certificate is None:
        raise CommandError(f"no certificate with serial {serial:x} was issued here")
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
    return f"revoked at {certificate.revoked_at.isoformat()} ({_reason_name(certificate)})"


_FIND_LIMIT = 50
_REASON_LABELS = {code: name for name, code in REVOCATION_REASON_NAMES.items()}


def _reason_name(certificate: CertificateView) -> str:
    code = certificate.revocation_reason or 0
    return _REASON_LABELS.get(code, f"reason {code}")


async def find_certificates(
    settings: Settings, subject_part: str, *, endpoint: str | None = None
) -> int:
    if not subject_part.strip() and endpoint is None:
        raise CommandError("give part of a subject to search for, e.g. a device name", status=2)
    async with runtime(settings, with_broker=False, patience=0) as rt:
        found = await rt.repository.find_certificates(
            subject_part.strip(), limit=_FIND_LIMIT, endpoint=endpoint
        )
    for certificate in found:
        status = "revoked" if certificate.revoked_at is not None else "valid"
        if certificate.is_voided:
            status = "voided"
        elif certificate.revoked_at is None and certificate.not_after < datetime.now(UTC):
            status = "expired"
        print(
            f"{certificate.serial}  {certificate.not_before:%Y-%m-%d}  {status:<8} "
            f"{certificate.endpoint}  {certificate.subject}"
        )
    more = " (the newest; narrow the search)" if len(found) == _FIND_LIMIT else ""
    print(f"{len(found)} certificate(s){more}")
    return 0 if found else 1


async def revoke_certificate(settings: Settings, serial: int, reason: str) -> int:
    """Record the revocation; the signers' CRL publishers see a revoked certificate
    missing from its CA's latest CRL and publish a new one at their next check.
    Revoking again changes nothing (the CRLs already said when and why) and says so."""
    async with runtime(settings, with_broker=False, patience=0) as rt:
        before = await rt.repository.get_certificate(serial)
        if before is None:
            raise CommandError(f"no certificate with serial {serial:x} was issued here")
        if before.revoked_at is not None:
            print(f"certificate {before.serial} ({before.subject})")
            print(
                f"already {_status(before)}; unchanged (a revocation's time and reason "
                "stay as the CRLs published them)"
            )
            return 0
        certificate = await rt.repository.revoke(serial, reason=REVOCATION_REASON_NAMES[reason])
        assert certificate is not None and certificate.revoked_at is not None
        print(f"certificate {certificate.serial} ({certificate.subject})")
        print(
            f"revoked at {certificate.revoked_at.isoformat()} ({_reason_name(certificate)}); "
            "the next CRL lists it (signers check every "
            f"{settings.crl_check_interval_seconds:g} s)"
        )
        return 0


async def prune_store(settings: Settings, older_than_days: int) -> int:
    """Retention: forget final requests and superseded CRLs older than N days."""
    cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
    async with runtime(settings, with_broker=False, patience=0) as rt:
        requests = await rt.repository.prune(untouched_since=cutoff)
        crls = await rt.repository.prune_crls(expired_before=cutoff)
        challenges = await rt.repository.prune_challenges(before=cutoff)
    print(f"deleted {requests} final request(s) untouched since {cutoff:%Y-%m-%d %H:%M} UTC")
    print("  (and their history; parked requests and issued certificates are kept)")
    print(f"deleted {crls} superseded CRL(s) expired before then (each CA's latest is kept)")
    print(f"deleted {challenges} one-time challenge(s) used or expired before then")
    return 0


async def dead_letters(
    settings: Settings, action: str, steps: Sequence[Step], ids: Sequence[str] | None
) -> int:
    in_process = settings.broker_url.startswith("memory://")
    # Only replay and purge may talk to the provider (and need the notifier);
    # listing works even while its configuration is broken (which is when dead
    # letters pile up).
    acts = action in ("replay", "purge")
    if acts:
        import scepline_notifier.main as notifier
        from scepline_shared.configured import endpoints_from

        from .runtime import intune_clients

        provider = intune_clients(settings, endpoints_from(settings))
    else:
        provider = contextlib.nullcontext({})
    async with (
        provider as intune,
        runtime(settings, with_broker=not in_process, patience=0) as rt,
    ):
        report_failure = notifier.build_failure_reporter(rt.repository, intune) if acts else None
        if in_process:
            late_notify = notifier.build_handler(settings, rt.repository, intune) if acts else None
            return await _parked_requests(rt, action, steps, ids, report_failure, late_notify)
        if ids is not None:
            known: set[str] = set()
            for step in steps:
                known |= {letter.id for letter in await rt.broker.dead_letters(step, limit=10_000)}
            _refuse_unknown(ids, known, steps)
        for step in steps:
            letters = await rt.broker.dead_letters(step, limit=1000)
            from scepline_ingress.dead_letters import resolved_letters  # loaded by dlq only

            resolved = await resolved_letters(rt.repository, letters)
            chosen = [d for d in letters if ids is None or d.id in ids]
            if action == "list":
                _print_list(step, letters, resolved)
            elif action == "show":
                for letter in chosen:
                    shown = {**_as_dict(letter), "resolved": letter.id in resolved}
                    print(json.dumps(shown, indent=2, default=str))
            elif action == "replay":
                done = await replay(rt.broker, rt.repository, step, ids=ids)
                print(f"{step.value}: replayed {done.replayed}, dropped {done.dropped} resolved")
            elif action == "purge":
                count = await purge(
                    rt.broker, rt.repository, step, ids=ids, report_failure=report_failure
                )
                final = len(resolved & {letter.id for letter in chosen})
                note = f" ({final} resolved: their requests stay as they were)" if final else ""
                print(f"{step.value}: purged {count}{note}")
        return 0


@dataclass(frozen=True)
class Replayed:
    replayed: int
    dropped: int
    """Resolved letters removed instead: their requests had finished anyway."""


async def replay(
    broker: Broker, repository: RequestRepository, step: Step, *, ids: Sequence[str] | None
) -> Replayed:
    """Send dead letters back to their step; their requests are the pipeline's
    again. Resolved letters are dropped instead: running a step again for a
    final request would only unpark it and waste a round trip."""
    letters = await _chosen(broker, step, ids)
    from scepline_ingress.dead_letters import resolved_letters  # loaded by dlq only

    resolved = await resolved_letters(repository, letters)
    dropped = await broker.purge(step, ids=resolved) if resolved else 0
    # Unpark first: should the replay publish fail, the sweep still has them.
    for letter in letters:
        if letter.message is not None and letter.id not in resolved:
            await repository.unpark(
                transaction_id=letter.message.transaction_id,
                requeued=True,
                detail=f"{step.value} dead letter replayed",
            )
    rest = None if ids is None else [letter for letter in ids if letter not in resolved]
    return Replayed(replayed=await broker.replay(step, ids=rest), dropped=dropped)


async def purge(
    broker: Broker,
    repository: RequestRepository,
    step: Step,
    *,
    ids: Sequence[str] | None,
    report_failure: FailureReporter | None = None,
) -> int:
    """Drop dead letters and give up on their requests (FAILED, not PENDING
    forever); ``report_failure`` tells the provider (Intune) of each. A request
    that is final already (a resolved letter's) is left as it is."""
    for letter in await _chosen(broker, step, ids):
        if letter.message is not None:
            await _give_up(repository, letter.message.transaction_id, report_failure)
    return await broker.purge(step, ids=ids)


async def _chosen(broker: Broker, step: Step, ids: Sequence[str] | None) -> list[DeadLetter]:
    letters = await broker.dead_letters(step, limit=10_000)
    return [letter for letter in letters if ids is None or letter.id in ids]


async def _parked_requests(
    rt: Runtime,
    action: str,
    steps: Sequence[Step],
    ids: Sequence[str] | None,
    report_failure: FailureReporter | None,
    notify: StepHandler | None,
) -> int:
    waiting = [r for r in await rt.repository.parked() if _parked_at_step(r) in steps]
    if ids is not None:
        _refuse_unknown(ids, {request.transaction_id for request in waiting}, steps)
    parked = [r for r in waiting if ids is None or r.transaction_id in ids]
    print(f"{len(parked)} parked request(s) (in-process broker: ids are transaction ids)")
    for request in parked:
        if action in ("list", "show"):
            _print_parked(request, full=action == "show")
        elif action == "replay":
            await rt.repository.unpark(transaction_id=request.transaction_id)
            if request.state is RequestState.ISSUED and notify is not None:
                await _notify_released(rt.repository, request.transaction_id, notify)
            else:
                print(f"  replayed {request.transaction_id}: the running scepline re-queues it")
        elif action == "purge":
            await _give_up(rt.repository, request.transaction_id, report_failure)
            print(f"  purged {request.transaction_id}: now FAILED")
    return 0


async def _notify_released(
    repository: RequestRepository, transaction_id: str, notify: StepHandler
) -> None:
    """Replay a notification whose certificate is out already
    (SCEPLINE_RELEASE_BEFORE_NOTIFY). The request is final, so no step is left
    for the running process's sweep to re-queue: the notify step runs here."""
    try:
        await notify(transaction_id)
    except Transient as unavailable:
        await repository.park(transaction_id=transaction_id, reason=unavailable.reason)
        print(f"  {transaction_id}: still not delivered ({unavailable.reason}); parked again")
        return
    request = await repository.get(transaction_id)
    state = request.notify_state if request is not None else "unknown"
    print(f"  replayed {transaction_id}: notification {state}")


async def _give_up(
    repository: RequestRepository,
    transaction_id: str,
    report_failure: FailureReporter | None,
) -> None:
    from scepline_shared.scep import FailInfo

    request = await repository.get(transaction_id)
    if request is None or request.is_terminal:
        return
    # A certificate signed but never handed out (its notification was purged),
    # or a serial claimed for signing, must never count as valid: revoked with
    # the FAILED state, in one transaction.
    failed = await repository.fail_and_revoke(
        transaction_id=transaction_id,
        from_state=request.state,
        detail="dead letter purged by an operator",
        fail_info=int(FailInfo.BAD_REQUEST),
        fail_reason="the request could not be completed",
    )
    await repository.unpark(transaction_id=transaction_id, detail="purged")
    if failed is None:
        return  # a worker moved it meanwhile: not ours to fail
    if request.cert_serial is not None:
        print(f"  revoked certificate {request.cert_serial}: signed, never released")
    if report_failure is not None:
        await report_failure(transaction_id)


def _refuse_unknown(ids: Sequence[str], known: set[str], steps: Sequence[Step]) -> None:
    """Ids that name no dead letter stop the command before it does anything:
    a typo must not become "replayed 0" and an exit status of success."""
    unknown = [letter for letter in ids if letter not in known]
    if unknown:
        queues = ", ".join(step.value for step in steps)
        raise CommandError(
            f"no dead letter with id {', '.join(map(repr, unknown))} in the {queues} "
            "queue(s); nothing done (`scepline dlq list` shows the ids)"
        )


def _parked_at_step(request: RequestView) -> Step | None:
    """The step whose dead-letter queue holds a parked request. A final request
    is only ever parked by the notify step (a notification after the release)."""
    return Step.NOTIFY if request.is_terminal else resume_step(request)


def _print_parked(request: RequestView, *, full: bool) -> None:
    step = _parked_at_step(request)
    parked_at = request.parked_at.isoformat() if request.parked_at else "-"
    print(f"  {request.transaction_id}  {parked_at}  {step.value if step else '-'}")
    if full:
        print(f"    state {request.state}, notify {request.notify_state}, {request.subject}")


def _print_list(step: Step, letters: Sequence[DeadLetter], resolved: set[str]) -> None:
    note = " (their requests finished anyway: replay drops them)" if resolved else ""
    print(f"{step.value}: {len(letters)} dead letter(s), {len(resolved)} resolved{note}")
    for letter in letters:
        transaction = letter.message.transaction_id if letter.message else "(unreadable)"
        status = "resolved" if letter.id in resolved else "waiting "
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

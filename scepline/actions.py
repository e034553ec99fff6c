"""The operator actions, one function each, returning data.

The command line (``admin.py``) prints what they return; the management API
and the console (``admin_api/``) serve it. What an action refuses is an
:class:`ActionError`: not found (an unknown serial, transaction or dead
letter) or bad input (an empty search, an unknown reason), with the one
message both show.

Dead letters: with RabbitMQ they are the messages in each step's DLQ. The
in-process broker of ``scepline up`` lives inside its serving processes, so
for it the actions work on what the store knows: requests parked because
their message was dead-lettered (their ids are transaction ids). Replaying
unparks them and the running process's sweep re-queues them (a notification
for a certificate released already is sent by the action itself: no step is
left to re-queue). Purging gives up on a request: it ends FAILED, so the device
gets a clear answer instead of PENDING forever; a certificate signed for it but
never released is revoked, and with the Intune provider Intune gets a
failureNotification for a request it had validated.

A dead letter whose request finished anyway is *resolved*
(``scepline_ingress.dead_letters``): listed as such, dropped by replay rather
than sent back, and purged without touching its final request.

Who did it: actions that change something take an :class:`Actor` (the API
token, or the command line) and record it in ``admin_action``; for the API's
actors the request's history names them too.
"""

from __future__ import annotations

import contextlib
import getpass
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from scepline_shared.broker.base import Broker
from scepline_shared.messages import DeadLetter
from scepline_shared.pipeline import Step, StepHandler, Transient, resume_step
from scepline_shared.settings import Settings
from scepline_shared.store.admin import AdminRepository
from scepline_shared.store.certificates import REVOCATION_REASON_NAMES
from scepline_shared.store.models import RequestState
from scepline_shared.store.repository import REFUSALS_KEPT, RequestRepository
from scepline_shared.store.views import CertificateView, EventView, RefusalView, RequestView

if TYPE_CHECKING:
    from scepline_notifier.main import FailureReporter

__all__ = [
    "FIND_LIMIT",
    "REASON_LABELS",
    "ActionError",
    "Actor",
    "DeadLetterHelpers",
    "Letter",
    "LetterOutcome",
    "Pruned",
    "Purged",
    "Replayed",
    "RequestDetail",
    "Revocation",
    "act_on_letters",
    "certificate",
    "certificate_status",
    "check_search",
    "command_line_actor",
    "dead_letter_helpers",
    "find_certificates",
    "find_letters",
    "letters",
    "list_requests",
    "prune",
    "purge",
    "purge_letters",
    "purge_parked",
    "reason_name",
    "replay",
    "replay_parked",
    "request_detail",
    "revoke_certificate",
]

FIND_LIMIT = 50
REASON_LABELS = {code: name for name, code in REVOCATION_REASON_NAMES.items()}


class ActionError(Exception):
    """An action refused: ``not_found`` or ``bad_input``, with what to tell the operator."""

    def __init__(self, message: str, *, kind: Literal["not_found", "bad_input"]) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Actor:
    """Who acts: a management API token, or the command line."""

    name: str  # as histories name it: "token 3 'alice' (operator)", "command line (root)"
    token_id: int | None = None
    # Whether the request's history names the actor (the command line's
    # histories stay as they always read).
    in_history: bool = True

    def by(self) -> str:
        return f" by {self.name}" if self.in_history else ""


def command_line_actor() -> Actor:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = "unknown user"
    return Actor(f"command line ({user})", in_history=False)


async def _record(
    admin: AdminRepository | None,
    actor: Actor | None,
    action: str,
    target_kind: str,
    target: str,
    detail: str = "",
) -> None:
    if admin is None or actor is None:
        return
    await admin.record_action(
        token_id=actor.token_id,
        actor=actor.name,
        action=action,
        target_kind=target_kind,
        target=target,
        detail=detail,
    )


# -- requests ----------------------------------------------------------------------


@dataclass(frozen=True)
class RequestDetail:
    transaction_id: str
    request: RequestView | None
    history: list[EventView]
    refusals: list[RefusalView]
    """Refusals of this transaction id before a request was recorded (the
    store's bounded ring remembers the latest)."""
    candidates: list[RequestView] = field(default_factory=list)
    """The client's transactionID names several requests (at several endpoints,
    or a renewal's): show one of these."""


async def request_detail(repository: RequestRepository, transaction_id: str) -> RequestDetail:
    """A request's state and history, and any refusal of its transaction id."""
    request = await repository.get(transaction_id)
    candidates: list[RequestView] = []
    if request is None:
        # The client's transactionID of a request whose key adds a renewal or
        # endpoint suffix (`request_key`): one match is that request.
        candidates = await repository.by_client_transaction(transaction_id)
        if len(candidates) == 1:
            request = candidates[0]
    refusals = await repository.refusals(transaction_id)
    history = await repository.history(request.transaction_id) if request is not None else []
    if request is None and len(candidates) > 1:
        return RequestDetail(transaction_id, None, [], refusals, candidates=candidates)
    if request is None and not refusals:
        raise ActionError(
            f"no request with transaction id {transaction_id!r}, and no refusal of it among "
            f"the last {REFUSALS_KEPT} (older ones are only in the logs)",
            kind="not_found",
        )
    return RequestDetail(transaction_id, request, history, refusals)


async def list_requests(
    repository: RequestRepository,
    state: RequestState | None,
    limit: int,
    *,
    endpoint: str | None = None,
) -> list[RequestView]:
    """Requests in one state (or any), at one endpoint (or any), most recently
    changed first: who is waiting now."""
    if limit < 1:
        raise ActionError("limit: at least 1", kind="bad_input")
    if state is None:
        found = await repository.recent(limit=limit if endpoint is None else limit * 20)
        return [r for r in found if endpoint is None or r.endpoint == endpoint][:limit]
    return await repository.in_state(state, limit=limit, endpoint=endpoint)


# -- certificates ----------------------------------------------------------------------


async def certificate(repository: RequestRepository, serial: int) -> CertificateView:
    found = await repository.get_certificate(serial)
    if found is None:
        raise ActionError(
            f"no certificate with serial {serial:x} was issued here", kind="not_found"
        )
    return found


def certificate_status(certificate: CertificateView, now: datetime | None = None) -> str:
    """``voided`` (claimed, never stored; revoked), ``revoked``, ``expired`` or ``valid``."""
    if certificate.is_voided:
        return "voided"
    if certificate.revoked_at is not None:
        return "revoked"
    if certificate.not_after < (now or datetime.now(UTC)):
        return "expired"
    return "valid"


def revocation_label(certificate: CertificateView) -> str:
    code = certificate.revocation_reason or 0
    return REASON_LABELS.get(code, f"reason {code}")


async def find_certificates(
    repository: RequestRepository,
    subject_part: str,
    *,
    limit: int = FIND_LIMIT,
    endpoint: str | None = None,
) -> list[CertificateView]:
    """Certificates whose subject contains the text (any case), at one endpoint
    (or any), newest first."""
    check_search(subject_part, endpoint=endpoint)
    return await repository.find_certificates(subject_part.strip(), limit=limit, endpoint=endpoint)


def check_search(subject_part: str, *, endpoint: str | None = None) -> None:
    if not subject_part.strip() and endpoint is None:
        raise ActionError(
            "give part of a subject to search for, e.g. a device name", kind="bad_input"
        )


def reason_name(text: str) -> str:
    """A revocation reason as operators spell it (``keyCompromise``,
    ``Key-Compromise``, ``key_compromise``) as its name (``key-compromise``)."""
    name = re.sub(r"(?<=[a-z])([A-Z])", r"-\1", text.strip()).lower().replace("_", "-")
    if name not in REVOCATION_REASON_NAMES:
        raise ActionError(
            f"not a revocation reason: {text!r}; one of "
            + ", ".join(REVOCATION_REASON_NAMES)
            + " (any case, also as keyCompromise)",
            kind="bad_input",
        )
    return name


@dataclass(frozen=True)
class Revocation:
    certificate: CertificateView
    already: bool
    """Revoked before: unchanged (its time and reason stay as the CRLs published them)."""


async def revoke_certificate(
    repository: RequestRepository,
    serial: int,
    reason: str,
    *,
    actor: Actor | None = None,
    admin: AdminRepository | None = None,
) -> Revocation:
    """Record the revocation; the signers' CRL publishers see a revoked certificate
    missing from its CA's latest CRL and publish a new one at their next check.
    Revoking again changes nothing (the CRLs already said when and why)."""
    before = await certificate(repository, serial)
    if before.revoked_at is not None:
        return Revocation(before, already=True)
    revoked = await repository.revoke(serial, reason=REVOCATION_REASON_NAMES[reason_name(reason)])
    assert revoked is not None and revoked.revoked_at is not None
    if revoked.revoked_at == before.revoked_at:  # pragma: no cover - revoked meanwhile
        return Revocation(revoked, already=True)
    label = revocation_label(revoked)
    await _record(admin, actor, "revoke", "certificate", revoked.serial, label)
    if actor is not None and actor.in_history:
        await repository.note(
            transaction_id=revoked.transaction_id,
            detail=f"certificate {revoked.serial} revoked ({label}){actor.by()}",
        )
    return Revocation(revoked, already=False)


# -- the store --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pruned:
    cutoff: datetime
    requests: int
    crls: int
    challenges: int = 0


async def prune(repository: RequestRepository, older_than_days: int) -> Pruned:
    """Retention: forget final requests and superseded CRLs older than N days."""
    cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
    requests = await repository.prune(untouched_since=cutoff)
    crls = await repository.prune_crls(expired_before=cutoff)
    challenges = await repository.prune_challenges(before=cutoff)
    return Pruned(cutoff, requests, crls, challenges)


# -- dead letters --------------------------------------------------------------------------


@dataclass(frozen=True)
class Letter:
    """A dead letter as an operator sees it, with either broker: a message in a
    step's DLQ (RabbitMQ) or a parked request (the in-process broker)."""

    id: str
    step: Step | None
    transaction_id: str | None  # None: an unreadable message
    dead_at: datetime | None
    reason: str
    resolved: bool
    message: DeadLetter | None = field(default=None, repr=False)  # RabbitMQ
    request: RequestView | None = field(default=None, repr=False)  # in-process: parked


async def letters(
    settings: Settings,
    repository: RequestRepository,
    broker: Broker,
    steps: Sequence[Step],
    *,
    limit: int = 1000,
    reasons: bool = False,
) -> dict[Step, list[Letter]]:
    """The dead letters of each step (the oldest ``limit``). ``reasons``: for the
    in-process broker, read why each request was parked from its history."""
    found: dict[Step, list[Letter]] = {step: [] for step in steps}
    if _in_process(settings):
        for request in await repository.parked(limit=limit):
            step = parked_at_step(request)
            if step not in found:
                continue
            reason = ""
            if reasons:
                events = await repository.history(request.transaction_id)
                parks = [e.detail for e in events if e.kind == "park"]
                reason = parks[-1].removeprefix("parked: ") if parks else ""
            found[step].append(
                Letter(
                    id=request.transaction_id,
                    step=step,
                    transaction_id=request.transaction_id,
                    dead_at=request.parked_at,
                    reason=reason,
                    resolved=False,
                    request=request,
                )
            )
        return found
    from scepline_ingress.dead_letters import resolved_letters  # loaded by dead letters only

    for step in steps:
        messages = await broker.dead_letters(step, limit=limit)
        resolved = await resolved_letters(repository, messages)
        found[step] = [
            Letter(
                id=message.id,
                step=step,
                transaction_id=message.message.transaction_id if message.message else None,
                dead_at=message.dead_at,
                reason=message.reason,
                resolved=message.id in resolved,
                message=message,
            )
            for message in messages
        ]
    return found


async def find_letters(
    settings: Settings,
    repository: RequestRepository,
    broker: Broker,
    steps: Sequence[Step],
    ids: Sequence[str],
    *,
    reasons: bool = False,
) -> dict[Step, list[Letter]]:
    """The dead letters with these ids; an :class:`ActionError` naming the ids
    that name none (nothing is done then: a typo must not become "replayed 0")."""
    everything = await letters(settings, repository, broker, steps, limit=10_000, reasons=reasons)
    known = {letter.id for chosen in everything.values() for letter in chosen}
    refuse_unknown(ids, known, steps)
    return {
        step: [letter for letter in chosen if letter.id in ids]
        for step, chosen in everything.items()
    }


def refuse_unknown(ids: Sequence[str], known: set[str], steps: Sequence[Step]) -> None:
    unknown = [letter for letter in ids if letter not in known]
    if unknown:
        queues = ", ".join(step.value for step in steps)
        raise ActionError(
            f"no dead letter with id {', '.join(map(repr, unknown))} in the {queues} "
            "queue(s); nothing done (`scepline dlq list` shows the ids)",
            kind="not_found",
        )


def _in_process(settings: Settings) -> bool:
    return settings.broker_url.startswith("memory://")


def parked_at_step(request: RequestView) -> Step | None:
    """The step whose dead-letter queue holds a parked request. A final request
    is only ever parked by the notify step (a notification after the release)."""
    return Step.NOTIFY if request.is_terminal else resume_step(request)


@dataclass(frozen=True)
class DeadLetterHelpers:
    """What replaying and purging need beyond the store: the provider's
    failure reporter (Intune is told of a give-up) and, for the in-process
    broker, the notify step (a notification after the release is sent here)."""

    report_failure: FailureReporter | None
    notify: StepHandler | None


@contextlib.asynccontextmanager
async def dead_letter_helpers(
    settings: Settings, repository: RequestRepository
) -> AsyncIterator[DeadLetterHelpers]:
    """Only replay and purge may talk to the provider (and need the notifier):
    listing works even while its configuration is broken (which is when dead
    letters pile up)."""
    import scepline_notifier.main as notifier
    from scepline_shared.configured import endpoints_from

    from .runtime import intune_clients

    endpoints = endpoints_from(settings)
    async with intune_clients(settings, endpoints) as intune:
        yield DeadLetterHelpers(
            # From the request's endpoint's tenant.
            report_failure=notifier.build_failure_reporter(repository, intune),
            notify=(
                notifier.build_handler(settings, repository, intune, endpoints=endpoints)
                if _in_process(settings)
                else None
            ),
        )


@dataclass(frozen=True)
class LetterOutcome:
    """What became of one dead letter."""

    id: str
    transaction_id: str | None
    # replayed, dropped (resolved: its request had finished), notified (a late
    # notification sent), parked-again (its notification failed again), purged,
    # left (resolved: purged, its request left as it was)
    outcome: str
    detail: str = ""
    revoked_serial: str | None = None  # purged: a certificate signed, never released


@dataclass(frozen=True)
class Replayed:
    replayed: int
    dropped: int
    """Resolved letters removed instead: their requests had finished anyway."""
    outcomes: tuple[LetterOutcome, ...] = ()


async def replay(
    broker: Broker,
    repository: RequestRepository,
    step: Step,
    *,
    ids: Sequence[str] | None,
    actor: Actor | None = None,
    admin: AdminRepository | None = None,
) -> Replayed:
    """Send dead letters back to their step; their requests are the pipeline's
    again. Resolved letters are dropped instead: running a step again for a
    final request would only unpark it and waste a round trip."""
    chosen = await _chosen(broker, step, ids)
    from scepline_ingress.dead_letters import resolved_letters  # loaded by dlq only

    resolved = await resolved_letters(repository, chosen)
    dropped = await broker.purge(step, ids=resolved) if resolved else 0
    outcomes = []
    by = actor.by() if actor is not None else ""
    # Unpark first: should the replay publish fail, the sweep still has them.
    for letter in chosen:
        transaction = letter.message.transaction_id if letter.message else None
        if letter.id in resolved:
            outcomes.append(LetterOutcome(letter.id, transaction, "dropped", "already final"))
            continue
        if transaction is not None:
            await repository.unpark(
                transaction_id=transaction,
                requeued=True,
                detail=f"{step.value} dead letter replayed{by}",
            )
        outcomes.append(LetterOutcome(letter.id, transaction, "replayed", f"back to {step.value}"))
        await _record_letter(admin, actor, "replay", letter, transaction)
    rest = None if ids is None else [letter for letter in ids if letter not in resolved]
    return Replayed(
        replayed=await broker.replay(step, ids=rest), dropped=dropped, outcomes=tuple(outcomes)
    )


@dataclass(frozen=True)
class Purged:
    count: int
    outcomes: tuple[LetterOutcome, ...] = ()

    @property
    def revoked(self) -> list[str]:
        return [o.revoked_serial for o in self.outcomes if o.revoked_serial is not None]


async def purge_letters(
    broker: Broker,
    repository: RequestRepository,
    step: Step,
    *,
    ids: Sequence[str] | None,
    report_failure: FailureReporter | None = None,
    actor: Actor | None = None,
    admin: AdminRepository | None = None,
) -> Purged:
    """Drop dead letters and give up on their requests (FAILED, not PENDING
    forever); ``report_failure`` tells the provider (Intune) of each. A request
    that is final already (a resolved letter's) is left as it is."""
    outcomes = []
    for letter in await _chosen(broker, step, ids):
        transaction = letter.message.transaction_id if letter.message else None
        revoked = None
        failed = False
        if transaction is not None:
            failed, revoked = await give_up(repository, transaction, report_failure, actor)
        outcomes.append(
            LetterOutcome(
                letter.id,
                transaction,
                "purged" if failed or transaction is None else "left",
                "now FAILED" if failed else "",
                revoked,
            )
        )
        await _record_letter(admin, actor, "purge", letter, transaction)
    return Purged(await broker.purge(step, ids=ids), tuple(outcomes))


async def _record_letter(
    admin: AdminRepository | None,
    actor: Actor | None,
    action: str,
    letter: DeadLetter,
    transaction_id: str | None,
) -> None:
    """On the request the letter was for (an unreadable one: on the letter)."""
    detail = f"{letter.step.value} dead letter {letter.id}"
    if transaction_id is None:
        await _record(admin, actor, action, "dead-letter", letter.id, detail)
    else:
        await _record(admin, actor, action, "request", transaction_id, detail)


async def purge(
    broker: Broker,
    repository: RequestRepository,
    step: Step,
    *,
    ids: Sequence[str] | None,
    report_failure: FailureReporter | None = None,
) -> int:
    """:func:`purge_letters`, counted."""
    purged = await purge_letters(broker, repository, step, ids=ids, report_failure=report_failure)
    return purged.count


async def _chosen(broker: Broker, step: Step, ids: Sequence[str] | None) -> list[DeadLetter]:
    found = await broker.dead_letters(step, limit=10_000)
    return [letter for letter in found if ids is None or letter.id in ids]


async def replay_parked(
    repository: RequestRepository,
    request: RequestView,
    notify: StepHandler | None,
    *,
    actor: Actor | None = None,
    admin: AdminRepository | None = None,
) -> LetterOutcome:
    """In-process broker: unpark the request; the running process's sweep
    re-queues it. A notification whose certificate is out already
    (SCEPLINE_RELEASE_BEFORE_NOTIFY) is sent here: no step is left to re-queue."""
    transaction_id = request.transaction_id
    by = actor.by() if actor is not None else ""
    await repository.unpark(transaction_id=transaction_id, detail=f"replayed{by}")
    await _record(admin, actor, "replay", "request", transaction_id)
    if request.state is not RequestState.ISSUED or notify is None:
        return LetterOutcome(
            transaction_id, transaction_id, "replayed", "the running scepline re-queues it"
        )
    try:
        await notify(transaction_id)
    except Transient as unavailable:
        await repository.park(transaction_id=transaction_id, reason=unavailable.reason)
        return LetterOutcome(transaction_id, transaction_id, "parked-again", unavailable.reason)
    after = await repository.get(transaction_id)
    state = after.notify_state if after is not None else "unknown"
    return LetterOutcome(transaction_id, transaction_id, "notified", f"notification {state}")


async def purge_parked(
    repository: RequestRepository,
    request: RequestView,
    report_failure: FailureReporter | None,
    *,
    actor: Actor | None = None,
    admin: AdminRepository | None = None,
) -> LetterOutcome:
    """In-process broker: give up on a parked request (FAILED)."""
    _, revoked = await give_up(repository, request.transaction_id, report_failure, actor)
    await _record(admin, actor, "purge", "request", request.transaction_id)
    return LetterOutcome(
        request.transaction_id, request.transaction_id, "purged", "now FAILED", revoked
    )


async def give_up(
    repository: RequestRepository,
    transaction_id: str,
    report_failure: FailureReporter | None,
    actor: Actor | None = None,
) -> tuple[bool, str | None]:
    """End a request FAILED (and unpark it); whether it was failed here, and
    the serial of a certificate signed for it but never released (revoked)."""
    from scepline_shared.scep import FailInfo

    request = await repository.get(transaction_id)
    if request is None or request.is_terminal:
        return False, None
    by = actor.by() if actor is not None else ""
    # A certificate signed but never handed out (its notification was purged),
    # or a serial claimed for signing, must never count as valid: revoked with
    # the FAILED state, in one transaction.
    failed = await repository.fail_and_revoke(
        transaction_id=transaction_id,
        from_state=request.state,
        detail=f"dead letter purged by an operator{by.replace(' by ', ': ', 1)}",
        fail_info=int(FailInfo.BAD_REQUEST),
        fail_reason="the request could not be completed",
    )
    await repository.unpark(transaction_id=transaction_id, detail="purged")
    if failed is None:
        return False, None  # a worker moved it meanwhile: not ours to fail
    if report_failure is not None:
        await report_failure(transaction_id)
    return True, request.cert_serial


async def act_on_letters(
    settings: Settings,
    repository: RequestRepository,
    broker: Broker,
    action: Literal["replay", "purge"],
    ids: Sequence[str],
    *,
    actor: Actor,
    admin: AdminRepository | None,
    steps: Sequence[Step] = tuple(Step),
) -> list[LetterOutcome]:
    """Replay or purge the dead letters with these ids, whichever step holds
    them (the API's and the console's one letter at a time); an
    :class:`ActionError` if an id names none, before anything is done."""
    chosen = await find_letters(settings, repository, broker, steps, ids)
    outcomes: list[LetterOutcome] = []
    async with dead_letter_helpers(settings, repository) as helpers:
        for step, found in chosen.items():
            if not found:
                continue
            if _in_process(settings):
                for letter in found:
                    assert letter.request is not None
                    if action == "replay":
                        done = await replay_parked(
                            repository, letter.request, helpers.notify, actor=actor, admin=admin
                        )
                    else:
                        done = await purge_parked(
                            repository,
                            letter.request,
                            helpers.report_failure,
                            actor=actor,
                            admin=admin,
                        )
                    outcomes.append(done)
                continue
            step_ids = [letter.id for letter in found]
            if action == "replay":
                replayed = await replay(
                    broker, repository, step, ids=step_ids, actor=actor, admin=admin
                )
                outcomes += replayed.outcomes
            else:
                purged = await purge_letters(
                    broker,
                    repository,
                    step,
                    ids=step_ids,
                    report_failure=helpers.report_failure,
                    actor=actor,
                    admin=admin,
                )
                outcomes += purged.outcomes
    return outcomes

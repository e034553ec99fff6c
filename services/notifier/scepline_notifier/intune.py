"""The notify step with Intune as the provider (docs/specs/intune-api.md, "Notifications").

SIGNED: successNotification first; ``Success`` → notify_state SENT, then the
release (ISSUED). Any other code, or a configuration/protocol error, withholds
the certificate ("must not issue"): the request ends FAILED (badRequest), the
certificate is revoked, and Intune gets a failureNotification. An unreachable
Intune raises ``Transient``: the worker retries, then dead-letters (notify_state
DEAD, request parked) until an operator replays it.

FAILED after a successful validation (the signer refused): failureNotification,
best effort. If that fails too it is logged and notify_state becomes DEAD; the
device already has its FAILURE.

The notify_state is written before the release, so a crash in between is
finished by the redelivery without notifying twice.
"""

from __future__ import annotations

from cryptography import x509

from scepline_shared.intune import IntuneClient, IntuneError, IntuneResult, IntuneUnavailable
from scepline_shared.log import get_logger
from scepline_shared.pipeline import Transient, state_after
from scepline_shared.scep import FailInfo
from scepline_shared.store.models import NotifyState, RequestState
from scepline_shared.store.repository import RequestRepository
from scepline_shared.store.views import RequestView

__all__ = [
    "hresult_for",
    "needs_failure_notification",
    "notify_intune",
    "owes_failure_notification",
    "report_given_up",
    "was_validated",
]

log = get_logger(__name__)

# HRESULTs with the customer bit set, as EJBCA sends them: 0x20000100 + failInfo,
# or 0x20000001 when there is no failInfo to report.
_HRESULT_FAILINFO_BASE = 0x20000100
_HRESULT_GENERIC = 0x20000001
_PENDING_NOTIFY = (NotifyState.NONE, NotifyState.DEAD)


def hresult_for(fail_info: int | None) -> int:
    return _HRESULT_GENERIC if fail_info is None else _HRESULT_FAILINFO_BASE + fail_info


def was_validated(request: RequestView) -> bool:
    """Did the provider approve this request (its approval is recorded with VALIDATED)?"""
    return request.approval is not None


def owes_failure_notification(request: RequestView | None, *, after_dead: bool = False) -> bool:
    """Is Intune owed a failureNotification: the request FAILED after Intune
    validated it, and Intune was not told. ``after_dead``: a notification that
    already failed (notify DEAD) counts as not told too (an operator's purge)."""
    untold = _PENDING_NOTIFY if after_dead else (NotifyState.NONE,)
    return (
        request is not None
        and request.state is RequestState.FAILED
        and request.notify_state in untold
        and was_validated(request)
    )


async def needs_failure_notification(repository: RequestRepository, transaction_id: str) -> bool:
    return owes_failure_notification(await repository.get(transaction_id))


async def report_given_up(
    repository: RequestRepository, intune: IntuneClient, transaction_id: str
) -> None:
    """An operator gave up on a request (``scepline dlq purge``): if Intune
    validated it and was never told how it ended, send the failureNotification
    (best effort, like every failure notification: recorded SENT or DEAD).
    A request whose success notification went DEAD is included: Intune heard
    nothing of it."""
    request = await repository.get(transaction_id)
    if request is not None and owes_failure_notification(request, after_dead=True):
        await _notify_failure(repository, intune, request)


async def notify_intune(
    request: RequestView,
    repository: RequestRepository,
    intune: IntuneClient,
    *,
    release_before_notify: bool,
) -> RequestState:
    if request.state is RequestState.SIGNED:
        if request.notify_state is NotifyState.SENT:  # notified, then crashed
            return await _release(repository, request, "released (Intune notified earlier)")
        if not release_before_notify:
            return await _notify_then_release(repository, intune, request)
        state = await _release(
            repository, request, "released before notifying Intune (RELEASE_BEFORE_NOTIFY)"
        )
        released = await repository.get(request.transaction_id)
        if state is not RequestState.ISSUED or released is None:
            return state
        request = released
    if request.state is RequestState.ISSUED and request.notify_state in _PENDING_NOTIFY:
        await _notify_released(repository, intune, request)
        return RequestState.ISSUED
    if owes_failure_notification(request):
        await _notify_failure(repository, intune, request)
    return request.state


async def _success(intune: IntuneClient, request: RequestView) -> IntuneResult:
    """successNotification; Transient when Intune cannot be reached for now."""
    if request.cert_der is None:
        raise ValueError(f"request {request.transaction_id} has no certificate to notify")
    try:
        return await intune.success_notification(
            transaction_id=request.scep_transaction_id,
            csr_der=request.csr_der,
            certificate=x509.load_der_x509_certificate(request.cert_der),
        )
    except IntuneUnavailable as unavailable:
        raise Transient(
            f"Intune successNotification: {unavailable.message}", defer=unavailable.retry_after
        ) from unavailable


async def _notify_then_release(
    repository: RequestRepository, intune: IntuneClient, request: RequestView
) -> RequestState:
    try:
        result = await _success(intune, request)
    except IntuneError as failed:
        return await _withhold(
            repository, intune, request, f"Intune successNotification failed: {failed.message}"
        )
    if not result.ok:
        reason = f"Intune refused the success notification: {result.code}"
        if result.error_description:
            reason = f"{reason}: {result.error_description[:200]}"
        return await _withhold(repository, intune, request, reason, code=result.code)
    await repository.transition_notify(
        transaction_id=request.transaction_id,
        from_state=request.notify_state,
        to_state=NotifyState.SENT,
        detail=f"successNotification: Success (activity {result.activity_id})",
    )
    return await _release(repository, request, "released after Intune's successNotification")


async def _notify_released(
    repository: RequestRepository, intune: IntuneClient, request: RequestView
) -> None:
    """The certificate is out already; Intune is told after the fact."""
    try:
        result = await _success(intune, request)
    except IntuneError as failed:
        await _dead(repository, request, f"successNotification failed: {failed.message}")
        return
    if result.ok:
        await repository.transition_notify(
            transaction_id=request.transaction_id,
            from_state=request.notify_state,
            to_state=NotifyState.SENT,
            detail=f"successNotification: Success (activity {result.activity_id})",
        )
        return
    # Too late to withhold: say so loudly, an admin may want to revoke.
    log.error(
        "intune refused the success notification of a released certificate",
        code=result.code,
        serial=request.cert_serial,
    )
    await _dead(repository, request, f"successNotification refused: {result.code}")


async def _withhold(
    repository: RequestRepository,
    intune: IntuneClient,
    request: RequestView,
    reason: str,
    *,
    code: str | None = None,
) -> RequestState:
    # Without a code of Intune's own, the validation's "Success" stays on record.
    recorded = {"provider_code": code} if code is not None else {}
    # Signed but never handed out: FAILED and revoked together, so no crash can
    # leave an unreleased certificate that still counts as valid.
    moved = await repository.fail_and_revoke(
        transaction_id=request.transaction_id,
        from_state=RequestState.SIGNED,
        detail=f"certificate withheld: {reason}",
        fail_info=int(FailInfo.BAD_REQUEST),
        fail_reason=reason,
        **recorded,
    )
    if moved is None:
        return await state_after(repository, request.transaction_id, moved)
    log.warning("certificate withheld", reason=reason, code=code, serial=moved.cert_serial)
    await _notify_failure(repository, intune, moved)
    return moved.state


async def _notify_failure(
    repository: RequestRepository, intune: IntuneClient, request: RequestView
) -> None:
    """failureNotification, best effort: its own failure is only logged
    (docs/specs/intune-api.md, "Notifications")."""
    description = request.fail_reason or "the certificate was not issued"
    try:
        result = await intune.failure_notification(
            transaction_id=request.scep_transaction_id,
            csr_der=request.csr_der,
            hresult=hresult_for(request.fail_info),
            error_description=description,
        )
    except IntuneError as failed:
        await _dead(repository, request, f"failureNotification failed: {failed.message}")
        return
    if not result.ok:
        await _dead(repository, request, f"failureNotification refused: {result.code}")
        return
    await repository.transition_notify(
        transaction_id=request.transaction_id,
        from_state=request.notify_state,
        to_state=NotifyState.SENT,
        detail=f"failureNotification: Success (activity {result.activity_id})",
    )


async def _dead(repository: RequestRepository, request: RequestView, detail: str) -> None:
    log.warning("intune notification not delivered", detail=detail)
    if request.notify_state is NotifyState.NONE:
        await repository.transition_notify(
            transaction_id=request.transaction_id,
            from_state=NotifyState.NONE,
            to_state=NotifyState.DEAD,
            detail=detail,
        )


async def _release(
    repository: RequestRepository, request: RequestView, detail: str
) -> RequestState:
    moved = await repository.transition(
        transaction_id=request.transaction_id,
        from_state=RequestState.SIGNED,
        to_state=RequestState.ISSUED,
        detail=detail,
    )
    if moved is not None:
        log.info("certificate released", serial=moved.cert_serial)
    return await state_after(repository, request.transaction_id, moved)

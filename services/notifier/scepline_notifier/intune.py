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
from scepline_shared.pipeline import Transient, owes_failure_notification, request_after
from scepline_shared.scep import FailInfo
from scepline_shared.store.models import NotifyState, RequestState
from scepline_shared.store.views import RequestView

from .ports import NotifierStore

__all__ = ["hresult_for", "notify_intune", "report_given_up"]

log = get_logger(__name__)

# HRESULTs with the customer bit set, as EJBCA sends them: 0x20000100 + failInfo,
# or 0x20000001 when there is no failInfo to report.
_HRESULT_FAILINFO_BASE = 0x20000100
_HRESULT_GENERIC = 0x20000001
_PENDING_NOTIFY = (NotifyState.NONE, NotifyState.DEAD)


def hresult_for(fail_info: int | None) -> int:
    return _HRESULT_GENERIC if fail_info is None else _HRESULT_FAILINFO_BASE + fail_info


async def report_given_up(
    repository: NotifierStore, intune: IntuneClient, transaction_id: str
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
    repository: NotifierStore,
    intune: IntuneClient,
    *,
    release_before_notify: bool,
) -> RequestView:
    if request.state is RequestState.SIGNED:
        if request.notify_state is NotifyState.SENT:  # notified, then crashed
            return await _release(repository, request, "released (Intune notified earlier)")
        if not release_before_notify:
            return await _notify_then_release(repository, intune, request)
        request = await _release(
            repository, request, "released before notifying Intune (RELEASE_BEFORE_NOTIFY)"
        )
    if request.state is RequestState.ISSUED and request.notify_state in _PENDING_NOTIFY:
        return await _notify_released(repository, intune, request)
    if owes_failure_notification(request):
        return await _notify_failure(repository, intune, request)
    return request


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
    repository: NotifierStore, intune: IntuneClient, request: RequestView
) -> RequestView:
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
    repository: NotifierStore, intune: IntuneClient, request: RequestView
) -> RequestView:
    """The certificate is out already; Intune is told after the fact."""
    try:
        result = await _success(intune, request)
    except IntuneError as failed:
        return await _dead(repository, request, f"successNotification failed: {failed.message}")
    if result.ok:
        moved = await repository.transition_notify(
            transaction_id=request.transaction_id,
            from_state=request.notify_state,
            to_state=NotifyState.SENT,
            detail=f"successNotification: Success (activity {result.activity_id})",
        )
        return await request_after(repository, request.transaction_id, moved)
    # Too late to withhold: say so loudly, an admin may want to revoke.
    log.error(
        "intune refused the success notification of a released certificate",
        code=result.code,
        serial=request.cert_serial,
    )
    return await _dead(repository, request, f"successNotification refused: {result.code}")


async def _withhold(
    repository: NotifierStore,
    intune: IntuneClient,
    request: RequestView,
    reason: str,
    *,
    code: str | None = None,
) -> RequestView:
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
        return await request_after(repository, request.transaction_id, moved)
    log.warning("certificate withheld", reason=reason, code=code, serial=moved.cert_serial)
    return await _notify_failure(repository, intune, moved)


async def _notify_failure(
    repository: NotifierStore, intune: IntuneClient, request: RequestView
) -> RequestView:
    """failureNotification, best effort: its own failure is only logged
    (docs/specs/intune-api.md, "Notifications"); the request as it is
    afterwards (notify SENT or DEAD)."""
    description = request.fail_reason or "the certificate was not issued"
    try:
        result = await intune.failure_notification(
            transaction_id=request.scep_transaction_id,
            csr_der=request.csr_der,
            hresult=hresult_for(request.fail_info),
            error_description=description,
        )
    except IntuneError as failed:
        return await _dead(repository, request, f"failureNotification failed: {failed.message}")
    if not result.ok:
        return await _dead(repository, request, f"failureNotification refused: {result.code}")
    moved = await repository.transition_notify(
        transaction_id=request.transaction_id,
        from_state=request.notify_state,
        to_state=NotifyState.SENT,
        detail=f"failureNotification: Success (activity {result.activity_id})",
    )
    return await request_after(repository, request.transaction_id, moved)


async def _dead(repository: NotifierStore, request: RequestView, detail: str) -> RequestView:
    log.warning("intune notification not delivered", detail=detail)
    if request.notify_state is not NotifyState.NONE:
        return request
    moved = await repository.transition_notify(
        transaction_id=request.transaction_id,
        from_state=NotifyState.NONE,
        to_state=NotifyState.DEAD,
        detail=detail,
    )
    return await request_after(repository, request.transaction_id, moved)


async def _release(repository: NotifierStore, request: RequestView, detail: str) -> RequestView:
    moved = await repository.transition(
        transaction_id=request.transaction_id,
        from_state=RequestState.SIGNED,
        to_state=RequestState.ISSUED,
        detail=detail,
    )
    if moved is not None:
        log.info("certificate released", serial=moved.cert_serial)
    return await request_after(repository, request.transaction_id, moved)

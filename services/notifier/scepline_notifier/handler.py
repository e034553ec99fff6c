"""Notify step: tell the provider what was issued, then release the certificate.

At an endpoint whose provider is not Intune there is no one to tell, so the
certificate is released at once (notify_state NOT_REQUIRED). With Intune the
success notification comes first and only its ``Success`` releases the
certificate (``intune.py``); failures after a successful validation are
reported too.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from scepline_shared.intune import IntuneClient
from scepline_shared.log import get_logger
from scepline_shared.pipeline import UnknownTransaction, owes_failure_notification, request_after
from scepline_shared.store.models import NotifyState, RequestState
from scepline_shared.store.views import RequestView

from .intune import notify_intune
from .ports import NotifierStore

__all__ = ["NotifierDeps", "handle_notify"]

log = get_logger(__name__)


@dataclass(frozen=True)
class NotifierDeps:
    repository: NotifierStore
    # None: the static provider, nobody to notify.
    intune: IntuneClient | None = None
    # SCEPLINE_RELEASE_BEFORE_NOTIFY: hand out the certificate first, notify after.
    release_before_notify: bool = False
    # The endpoints whose provider is Intune (None: every endpoint's).
    intune_endpoints: Collection[str] | None = None
    # Each Intune endpoint's client (its tenant's), by endpoint name; when
    # given, it decides instead of ``intune`` and ``intune_endpoints``.
    clients: Mapping[str, IntuneClient] = field(default_factory=dict)

    def client_for(self, endpoint: str) -> IntuneClient | None:
        if self.clients:
            return self.clients.get(endpoint)
        if self.intune_endpoints is None or endpoint in self.intune_endpoints:
            return self.intune
        return None


async def handle_notify(transaction_id: str, deps: NotifierDeps) -> RequestView:
    if deps.intune is not None or deps.clients:
        request = await deps.repository.get(transaction_id)
        if request is None:
            raise UnknownTransaction(transaction_id)
        client = deps.client_for(request.endpoint)
        if client is not None:
            return await notify_intune(
                request,
                deps.repository,
                client,
                release_before_notify=deps.release_before_notify,
            )
    # Nothing to notify: the release is one compare-and-set, tried straight
    # away (one statement instead of a read and a write); if the request was
    # not SIGNED, `request_after` reads what it is (a redelivery, say).
    moved = await deps.repository.transition(
        transaction_id=transaction_id,
        from_state=RequestState.SIGNED,
        to_state=RequestState.ISSUED,
        detail="released (provider needs no notification)",
        notify_state=NotifyState.NOT_REQUIRED,
    )
    if moved is not None:
        log.info("certificate released", serial=moved.cert_serial, endpoint=moved.endpoint)
        return moved
    request = await request_after(deps.repository, transaction_id, moved)
    if owes_failure_notification(request):
        # A provider without notifications vouched for it: nobody to tell.
        told = await deps.repository.transition_notify(
            transaction_id=transaction_id,
            from_state=NotifyState.NONE,
            to_state=NotifyState.NOT_REQUIRED,
            detail="failure: provider needs no notification",
        )
        return await request_after(deps.repository, transaction_id, told)
    return request

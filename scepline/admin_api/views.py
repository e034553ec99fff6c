"""The store's views as the API's JSON (and the console's template values)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from scepline_shared.store.admin import AdminActionView
from scepline_shared.store.views import CertificateView, EventView, RefusalView, RequestView

from .. import actions
from .cas import CertificateInfo, CrlInfo, GenerationInfo

__all__ = [
    "action_json",
    "certificate_json",
    "event_json",
    "generation_json",
    "letter_json",
    "refusal_json",
    "request_json",
]


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def request_json(request: RequestView) -> dict[str, Any]:
    return {
        "transaction_id": request.transaction_id,
        "state": request.state.value,
        "notify_state": request.notify_state.value,
        "subject": request.subject,
        "approval": request.approval.value if request.approval else None,
        "renewal_of_serial": request.renewal_of_serial,
        "cert_serial": request.cert_serial,
        "fail_info": request.fail_info,
        "fail_reason": request.fail_reason,
        "provider_code": request.provider_code,
        "attempts": request.attempts,
        "created_at": _time(request.created_at),
        "updated_at": _time(request.updated_at),
        "queued_at": _time(request.queued_at),
        "parked_at": _time(request.parked_at),
        "parked": request.parked_at is not None,
    }


def event_json(event: EventView) -> dict[str, Any]:
    return {
        "at": _time(event.at),
        "kind": event.kind,
        "from_state": event.from_state,
        "to_state": event.to_state,
        "detail": event.detail,
    }


def refusal_json(refusal: RefusalView) -> dict[str, Any]:
    from scepline_shared.scep import FailInfo

    from ..admin import message_type_name

    return {
        "at": _time(refusal.at),
        "message_type": message_type_name(refusal.message_type),
        "fail_info": FailInfo(refusal.fail_info).rfc_name,
        "reason": refusal.reason,
    }


def certificate_json(certificate: CertificateView) -> dict[str, Any]:
    """``status``: ``valid``, ``revoked`` or ``expired``; a voided serial
    (claimed for signing, never stored) is ``revoked`` with ``voided`` true."""
    status = actions.certificate_status(certificate)
    revoked = certificate.revoked_at is not None
    return {
        "serial": certificate.serial,
        "subject": certificate.subject,
        "issuer": certificate.issuer,
        "not_before": _time(certificate.not_before),
        "not_after": _time(certificate.not_after),
        "status": "revoked" if status == "voided" else status,
        "voided": certificate.is_voided,
        "revoked_at": _time(certificate.revoked_at),
        "revocation_reason": actions.revocation_label(certificate) if revoked else None,
        "transaction_id": certificate.transaction_id,
        "renews_serial": certificate.renews_serial,
        "issuer_key_id": certificate.issuer_key_id,
    }


def letter_json(letter: actions.Letter) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "id": letter.id,
        "step": letter.step.value if letter.step else None,
        "transaction_id": letter.transaction_id,
        "dead_at": _time(letter.dead_at),
        "reason": letter.reason,
        "resolved": letter.resolved,
        "kind": "parked-request" if letter.request is not None else "message",
    }
    if letter.message is not None:
        message = letter.message.message
        shown["attempt"] = message.attempt if message else None
        shown["raw"] = letter.message.raw.decode(errors="replace") if message is None else None
    if letter.request is not None:
        shown["request"] = request_json(letter.request)
    return shown


def outcome_json(outcome: actions.LetterOutcome) -> dict[str, Any]:
    return {
        "id": outcome.id,
        "transaction_id": outcome.transaction_id,
        "outcome": outcome.outcome,
        "detail": outcome.detail,
        "revoked_serial": outcome.revoked_serial,
    }


def action_json(action: AdminActionView) -> dict[str, Any]:
    return {
        "at": _time(action.at),
        "actor": action.actor,
        "token_id": action.token_id,
        "action": action.action,
        "target_kind": action.target_kind,
        "target": action.target,
        "detail": action.detail,
    }


def _certificate_info(info: CertificateInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    return {
        "subject": info.subject,
        "serial": info.serial,
        "not_before": _time(info.not_before),
        "not_after": _time(info.not_after),
        "sha256": info.sha256,
        "key": info.key,
        "key_id": info.key_id,
    }


def _crl_info(crl: CrlInfo | None) -> dict[str, Any] | None:
    if crl is None:
        return None
    return {
        "number": crl.number,
        "this_update": _time(crl.this_update),
        "next_update": _time(crl.next_update),
        "revoked": crl.revoked,
    }


def generation_json(generation: GenerationInfo) -> dict[str, Any]:
    return {
        "generation": generation.number,
        "status": generation.status,
        "switch_at": _time(generation.switch_at),
        "ca": _certificate_info(generation.ca),
        "ra": _certificate_info(generation.ra),
        "ocsp": _certificate_info(generation.ocsp),
        "crl": _crl_info(generation.crl),
    }


def jsonable(value: Any) -> Any:
    """Datetimes in nested dicts and lists as ISO-8601 text."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return value

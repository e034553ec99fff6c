"""Row-to-view conversion, kept apart so the repository stays readable."""

from __future__ import annotations

from scepline_shared.store.models import Crl, IssuedCertificate, ScepRequest
from scepline_shared.store.views import CertificateView, CrlView, RequestView

__all__ = ["certificate_view", "crl_view", "request_view"]


def request_view(row: ScepRequest) -> RequestView:
    return RequestView(
        id=row.id,
        transaction_id=row.transaction_id,
        signer_key_id=row.signer_key_id,
        message_type=row.message_type,
        csr_der=row.csr_der,
        signer_cert_der=row.signer_cert_der,
        subject=row.subject,
        renewal_of_serial=row.renewal_of_serial,
        state=row.state,
        notify_state=row.notify_state,
        fail_info=row.fail_info,
        fail_reason=row.fail_reason,
        provider_code=row.provider_code,
        cert_serial=row.cert_serial,
        cert_der=row.cert_der,
        attempts=row.attempts,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        queued_at=row.queued_at,
        parked_at=row.parked_at,
    )


def certificate_view(row: IssuedCertificate) -> CertificateView:
    return CertificateView(
        serial=row.serial,
        transaction_id=row.transaction_id,
        issuer=row.issuer,
        subject=row.subject,
        not_before=row.not_before,
        not_after=row.not_after,
        der=row.der,
        revoked_at=row.revoked_at,
        revocation_reason=row.revocation_reason,
    )


def crl_view(row: Crl) -> CrlView:
    return CrlView(
        number=row.number,
        issuer_key_id=row.issuer_key_id,
        this_update=row.this_update,
        next_update=row.next_update,
        der=row.der,
    )

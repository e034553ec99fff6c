"""The one place that turns an exception into what the client sees.

ScepService answers every ScepError that carries a message header itself, with
a CertRep FAILURE signed by the right RA; a ScepError that reaches this module
has no header (we could not read the message) and becomes HTTP 400. Anything
unexpected (a store or token outage) is logged with its traceback and answered
503 with Retry-After: the request is either recorded (and the pipeline carries
on) or not, and SCEP clients retry either way. No traceback ever reaches the
client.
"""

from __future__ import annotations

from fastapi.responses import PlainTextResponse, Response

from scepline_shared.log import get_logger
from scepline_shared.metrics import ENDPOINT_REQUESTS, SCEP_REQUESTS
from scepline_shared.scep import MessageType, ScepError

from .service import ScepReply

__all__ = ["PKI_MESSAGE", "pki_response", "response_for_error", "unavailable"]

log = get_logger(__name__)

PKI_MESSAGE = "application/x-pki-message"


def pki_response(reply: ScepReply, endpoint: str | None = None) -> Response:
    outcome = (
        reply.status.name if reply.fail_info is None else f"FAILURE_{reply.fail_info.rfc_name}"
    )
    SCEP_REQUESTS.labels("PKIOperation", reply.message_type.name, outcome).inc()
    if endpoint is not None:
        ENDPOINT_REQUESTS.labels(endpoint, "PKIOperation", outcome).inc()
    return Response(content=reply.body, media_type=PKI_MESSAGE)


def response_for_error(error: Exception, endpoint: str | None = None) -> Response:
    if isinstance(error, ScepError):
        SCEP_REQUESTS.labels("PKIOperation", _type_name(error), "malformed").inc()
        if endpoint is not None:
            ENDPOINT_REQUESTS.labels(endpoint, "PKIOperation", "malformed").inc()
        log.info("refused an unreadable pkiMessage", reason=error.failure_message)
        return PlainTextResponse(f"bad SCEP message: {error.failure_message}\n", status_code=400)
    log.exception("PKIOperation failed unexpectedly", exc_info=error)
    SCEP_REQUESTS.labels("PKIOperation", "unknown", "error").inc()
    if endpoint is not None:
        ENDPOINT_REQUESTS.labels(endpoint, "PKIOperation", "error").inc()
    return unavailable()


def unavailable() -> Response:
    return PlainTextResponse(
        "temporarily unable to process the request; retry later\n",
        status_code=503,
        headers={"Retry-After": "30"},
    )


def _type_name(error: ScepError) -> str:
    header = error.header
    if header is None or header.message_type is None:
        return "unknown"
    return MessageType(header.message_type).name

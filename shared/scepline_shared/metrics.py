"""Prometheus metrics, one place for every name.

Each process exposes them at ``/metrics`` on its health port
(``scepline_shared.health``), never on the SCEP port.
"""

from __future__ import annotations

import os

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "CA_NOT_AFTER",
    "ENDPOINT_REQUESTS",
    "HTTP_REFUSED",
    "INTUNE_LATENCY",
    "INTUNE_REVOCATIONS",
    "OCSP_CACHE",
    "OCSP_RESPONDER_NOT_AFTER",
    "OCSP_RESPONSES",
    "OCSP_SIGNING_SECONDS",
    "PIPELINE_STEP_SECONDS",
    "QUEUE_LAG",
    "QUEUE_MESSAGES",
    "REQUESTS_IN_FLIGHT",
    "SCEP_REQUESTS",
    "SIGNING_SECONDS",
    "SWEPT_REQUESTS",
    "clear_labels",
]

SCEP_REQUESTS = Counter(
    "scepline_scep_requests_total",
    "SCEP HTTP requests by operation, message type and outcome",
    ["operation", "message_type", "outcome"],
)
ENDPOINT_REQUESTS = Counter(
    "scepline_endpoint_requests_total",
    "SCEP HTTP requests by endpoint (docs/endpoints.md), operation and outcome "
    "(for PKIOperation: SUCCESS, PENDING, FAILURE_<failInfo>)",
    ["endpoint", "operation", "outcome"],
)
HTTP_REFUSED = Counter(
    "scepline_http_refused_total",
    "HTTP connections answered and closed by a limit, by status: 431 (request head "
    "too large), 408 (head not received in time), 503 (too many connections)",
    ["status"],
)
SIGNING_SECONDS = Histogram(
    "scepline_signing_seconds",
    "Time to build and sign one certificate with the CA key",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
PIPELINE_STEP_SECONDS = Histogram(
    "scepline_pipeline_step_seconds",
    "Time spent in one pipeline step handler",
    ["step", "outcome"],
)
QUEUE_LAG = Histogram(
    "scepline_queue_lag_seconds",
    "Time between a step being queued and a worker starting it",
    ["step"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120),
)
QUEUE_MESSAGES = Gauge(
    "scepline_queue_messages",
    "Messages waiting in the broker per step and queue: work (for a worker), "
    "retry (for their backoff to pass), dlq (for an operator: scepline dlq replay), "
    "dlq_resolved (dead letters whose request finished anyway: replay drops them)",
    ["step", "queue"],
    # `scepline up` on several processes: each has its own in-process queues.
    multiprocess_mode="livesum",
)
SWEPT_REQUESTS = Counter(
    "scepline_swept_requests_total",
    "Requests the sweep handed back to the pipeline after nobody touched them "
    "(a publish lost while the broker was down, a process that died mid-step)",
    ["step"],
)
INTUNE_LATENCY = Histogram(
    "scepline_intune_request_seconds",
    "Latency of calls to Intune (and Entra/Graph) by call and outcome",
    ["call", "outcome"],
)
INTUNE_REVOCATIONS = Counter(
    "scepline_intune_revocations_total",
    "Revocation requests from Intune by result "
    "(revoked, already_revoked, not_found, invalid_serial)",
    ["result"],
)
REQUESTS_IN_FLIGHT = Gauge(
    "scepline_requests_in_flight",
    "Enrolment requests the ingress is waiting on",
    multiprocess_mode="livesum",
)

# CRL publishing (signer; scepline_signer.crl_publisher).
CRL_PUBLISHED = Counter(
    "scepline_crl_published_total",
    "CRLs published, by why (initial, revocation, refresh, forced)",
    ["reason"],
)
CRL_PUBLISH_ERRORS = Counter(
    "scepline_crl_publish_errors_total",
    "CRL publishing rounds that failed for one CA (retried next round)",
)
CRL_NEXT_UPDATE = Gauge(
    "scepline_crl_next_update_timestamp_seconds",
    "nextUpdate of the latest CRL seen per CA key id (alert well before it passes)",
    ["issuer_key_id"],
    multiprocess_mode="max",
)

# The CA schedule (every process that loads it; scepline_shared.ca.schedule).
CA_NOT_AFTER = Gauge(
    "scepline_ca_certificate_not_after_timestamp_seconds",
    "notAfter of each CA and RA certificate of the CA schedule, by generation "
    "(alert well before the active one's: stage a rollover with scepline ca rollover)",
    ["generation", "role"],
    multiprocess_mode="max",
)


# OCSP (scepline_shared.ocsp: ingress, scepline ocsp, scepline up).
OCSP_RESPONSES = Counter(
    "scepline_ocsp_responses_total",
    "OCSP answers by responseStatus and, for successful ones, certificate status "
    "(good, revoked, unknown; one per certificate asked about)",
    ["status"],
)
OCSP_CACHE = Counter(
    "scepline_ocsp_cache_total",
    "OCSP responses by how they were found: hit (served from the cache), revalidated "
    "(status re-read, unchanged), signed (new signature), stale (store down: a cached "
    "response still within its nextUpdate)",
    ["result"],
)
OCSP_SIGNING_SECONDS = Histogram(
    "scepline_ocsp_signing_seconds",
    "Time the responder key takes to sign one OCSP response",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
OCSP_RESPONDER_NOT_AFTER = Gauge(
    "scepline_ocsp_responder_not_after_timestamp_seconds",
    "notAfter of the OCSP responder certificate per CA key id (the signer renews it "
    "at half its life: alert if it comes near)",
    ["issuer_key_id"],
    multiprocess_mode="max",
)


def clear_labels(gauge: Gauge) -> None:
    """Forget every labelled value of ``gauge``. Across the processes of
    ``scepline up`` on every core (prometheus_client's multiprocess mode) each
    process writes its own values and clearing is not supported: left as is."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        gauge.clear()

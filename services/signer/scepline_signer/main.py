"""Signer wiring: the CA key, the certificate profile and the CRL publisher."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from scepline_shared.ca import CaSchedule
from scepline_shared.ca.tbs import tbs_sha256_of
from scepline_shared.configured import ca_root, endpoints_from, key_source, profile_from
from scepline_shared.endpoints import DEFAULT_CA, Endpoints
from scepline_shared.keys import KeyPair, spki_sha256_hex
from scepline_shared.pipeline import Step, StepHandler
from scepline_shared.settings import Settings
from scepline_shared.store.models import JournalKind

from .crl_publisher import CrlPublisher, OffLoop
from .handler import SignerDeps, handle_sign
from .ocsp_responders import OcspResponderKeeper
from .ports import CrlStore, JournalsCaCertificates, SignerStore

__all__ = [
    "STEP",
    "build_crl_publisher",
    "build_handler",
    "build_ocsp_responder_keeper",
    "journal_ca_certificates",
    "signing_executor",
]

STEP = Step.SIGN


def signing_executor() -> ThreadPoolExecutor:
    """Threads for token-key issuance; create it in the process that signs (after fork).

    Two threads, though the token serialises C_Sign under its process-wide lock:
    while one waits on the token (GIL released) the other builds and hashes the
    next TBSCertificate. More would only queue on the lock.
    """
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="signer-hsm")


def build_handler(
    settings: Settings,
    repository: SignerStore,
    ca: Callable[[], KeyPair],
    *,
    executor: ThreadPoolExecutor | None = None,
    endpoints: Endpoints | None = None,
    cas: Mapping[str, Callable[[], KeyPair]] | None = None,
) -> StepHandler:
    """The sign step. ``ca`` returns the default CA active at signing time (called
    per request); ``cas`` each named CA's, by CA name.

    ``executor`` defaults to a new :func:`signing_executor`; ``endpoints`` (whose
    profiles and CAs it issues under) to those of the settings and configuration file.
    """
    endpoints = endpoints if endpoints is not None else endpoints_from(settings)
    named = dict(cas or {})
    for endpoint in endpoints:
        if endpoint.ca != DEFAULT_CA and endpoint.ca not in named:
            # Never sign an endpoint's certificates with another CA's key.
            raise ValueError(f"endpoint {endpoint.name}: the signer has no CA {endpoint.ca!r}")
    deps = SignerDeps(
        repository=repository,
        ca=ca,
        profile=profile_from(settings),
        profiles={endpoint.name: endpoint.profile for endpoint in endpoints},
        cas={e.name: named[e.ca] for e in endpoints if e.ca != DEFAULT_CA},
        public_base_url=settings.public_base_url,
        executor=executor if executor is not None else signing_executor(),
        # A claim untouched that long is the sweep's to bring back: the same
        # "nobody moved it on" as for any other step.
        claim_timeout=timedelta(seconds=settings.sweep_stale_after_seconds),
    )
    return partial(handle_sign, deps=deps)


def build_crl_publisher(
    settings: Settings,
    repository: CrlStore,
    cas: Callable[[], Iterable[KeyPair]],
    *,
    sign: OffLoop | None = None,
) -> CrlPublisher:
    """The signer's CRL publisher: ``cas`` returns the CAs that need CRLs now
    (active + previous generations); run it with ``await publisher.run()`` and
    end it with ``publisher.stop()``."""
    if sign is None:
        return CrlPublisher.from_settings(settings, repository, cas)
    return CrlPublisher.from_settings(settings, repository, cas, sign=sign)


def build_ocsp_responder_keeper(
    settings: Settings,
    repository: JournalsCaCertificates,
    schedule: Callable[[], CaSchedule],
    ca: str = DEFAULT_CA,
) -> OcspResponderKeeper | None:
    """Issues and renews CA ``ca``'s delegated OCSP responder certificates (None
    when the CA key signs OCSP responses itself: SCEPLINE_OCSP_SIGNING=ca)."""
    if settings.ocsp_signing != "delegated":
        return None
    return OcspResponderKeeper(
        repository=repository,
        data_dir=ca_root(settings.data_dir, ca),
        keys=key_source(settings, ca),
        schedule=schedule,
        validity=timedelta(days=settings.ocsp_responder_validity_days),
        interval=settings.crl_check_interval_seconds,
    )


async def journal_ca_certificates(repository: CrlStore, schedule: CaSchedule) -> int:
    """Put the CA's own certificates into the issuance journal: each generation's
    CA certificate if its own key signed it (not an imported CA's) and its RA
    certificate. ``ca init`` and ``ca rollover`` make them as files, before a
    store may exist, so the processes that hold the CA key record them when they
    load it. Idempotent; how many were new."""
    added = 0
    for generation in schedule.generations:
        ca = generation.material.ca.certificate
        ra = generation.material.ra.certificate
        ca_key_id = spki_sha256_hex(ca.public_key())
        signed = [(JournalKind.RA_CERTIFICATE, ra)]
        if _self_signed(ca):
            signed.insert(0, (JournalKind.CA_CERTIFICATE, ca))
        for kind, certificate in signed:
            added += await repository.journal_ca_certificate(
                kind=kind,
                issuer_key_id=ca_key_id,
                issuer=ca.subject.rfc4514_string(),
                serial=certificate.serial_number,
                subject=certificate.subject.rfc4514_string(),
                not_before=certificate.not_valid_before_utc,
                not_after=certificate.not_valid_after_utc,
                tbs_sha256=tbs_sha256_of(certificate),
            )
    return added


def _self_signed(certificate: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True

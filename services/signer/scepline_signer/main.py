"""Signer wiring: the CA key, the certificate profile and the CRL publisher."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from scepline_shared.ca import CertificateProfile
from scepline_shared.ca.crl_publisher import CrlPublisher, OffLoop
from scepline_shared.ca.profile import ProfileNameError
from scepline_shared.keys import KeyPair
from scepline_shared.pipeline import Step, StepHandler
from scepline_shared.settings import Settings
from scepline_shared.store.certificates import CertificateRepository
from scepline_shared.store.repository import RequestRepository

from .handler import SignerDeps, handle_sign

__all__ = ["STEP", "build_crl_publisher", "build_handler", "profile_from", "signing_executor"]

STEP = Step.SIGN

# CertificateProfile.from_names argument -> the Settings field it comes from.
_SETTING_FOR: dict[str, str] = {
    "validity_days": "cert_validity_days",
    "key_usage": "cert_key_usage",
    "extended_key_usage": "cert_extended_key_usage",
    "san_types": "cert_san_types",
    "on_disallowed_san": "cert_on_disallowed_san",
    "copy_subject": "cert_copy_subject",
    "key_types": "cert_key_types",
    "min_rsa_bits": "cert_min_rsa_bits",
    "max_rsa_bits": "cert_max_rsa_bits",
}


def profile_from(settings: Settings) -> CertificateProfile:
    """The issuance profile from SCEPLINE_CERT_* settings.

    Raises ValueError naming the environment variable at fault, so a typo in an
    EKU or key-usage name stops the signer at start-up instead of at the first
    enrolment.
    """
    try:
        return CertificateProfile.from_names(
            validity_days=settings.cert_validity_days,
            key_usage=settings.cert_key_usage,
            extended_key_usage=settings.cert_extended_key_usage,
            san_types=settings.cert_san_types,
            on_disallowed_san=settings.cert_on_disallowed_san,
            copy_subject=settings.cert_copy_subject,
            key_types=settings.cert_key_types,
            min_rsa_bits=settings.cert_min_rsa_bits,
            max_rsa_bits=settings.cert_max_rsa_bits,
        )
    except ProfileNameError as error:
        variable = f"SCEPLINE_{_SETTING_FOR[error.field].upper()}"
        raise ValueError(f"{variable}: {error.detail}") from None
    except ValueError as error:
        raise ValueError(f"SCEPLINE_CERT_* certificate profile: {error}") from None


def signing_executor() -> ThreadPoolExecutor:
    """Threads for token-key issuance; create it in the process that signs (after fork).

    Two threads, though the token serialises C_Sign under its process-wide lock:
    while one waits on the token (GIL released) the other builds and hashes the
    next TBSCertificate. More would only queue on the lock.
    """
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="signer-hsm")


def build_handler(
    settings: Settings,
    repository: RequestRepository,
    ca: Callable[[], KeyPair],
    *,
    executor: ThreadPoolExecutor | None = None,
) -> StepHandler:
    """The sign step. ``ca`` returns the CA active at signing time (called per request).

    ``executor`` defaults to a new :func:`signing_executor`.
    """
    deps = SignerDeps(
        repository=repository,
        ca=ca,
        profile=profile_from(settings),
        public_base_url=settings.public_base_url,
        executor=executor if executor is not None else signing_executor(),
    )
    return partial(handle_sign, deps=deps)


def build_crl_publisher(
    settings: Settings,
    repository: CertificateRepository,
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

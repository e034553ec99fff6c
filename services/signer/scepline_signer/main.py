"""Signer wiring: the CA key and the certificate profile."""

from __future__ import annotations

from functools import partial

from scepline_shared.ca import CaMaterial, CertificateProfile
from scepline_shared.pipeline import Step, StepHandler
from scepline_shared.settings import Settings
from scepline_shared.store.repository import RequestRepository

from .handler import SignerDeps, handle_sign

__all__ = ["STEP", "build_handler", "profile_from"]

STEP = Step.SIGN


def profile_from(settings: Settings) -> CertificateProfile:
    return CertificateProfile(validity_days=settings.cert_validity_days)


def build_handler(
    settings: Settings, repository: RequestRepository, material: CaMaterial
) -> StepHandler:
    return partial(handle_sign, deps=SignerDeps(repository, material.ca, profile_from(settings)))

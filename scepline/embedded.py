"""``scepline up``: every service in one process, on one machine.

SQLite (unless SCEPLINE_DATABASE_URL says otherwise), the in-process pipeline
and a lab CA generated on first run under SCEPLINE_DATA_DIR.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scepline_ingress.identity import ScepIdentity
from scepline_ingress.main import build_ingress_app
from scepline_notifier.handler import NotifierDeps, handle_notify
from scepline_shared.ca import CaMaterial, CertificateProfile, ensure_lab_ca
from scepline_shared.challenge import ChallengeValidator, StaticChallengeValidator
from scepline_shared.inline_pipeline import InlinePipeline, Sweeper
from scepline_shared.log import get_logger
from scepline_shared.pipeline import Step
from scepline_shared.settings import Settings
from scepline_shared.store.database import create_engine_for, session_factory
from scepline_shared.store.migrate import upgrade_to_head
from scepline_shared.store.repository import RequestRepository
from scepline_signer.handler import SignerDeps, handle_sign
from scepline_validator.handler import ValidatorDeps, handle_validate

__all__ = ["EmbeddedApp", "build_embedded_app", "static_challenge"]

log = get_logger(__name__)


@dataclass(frozen=True)
class EmbeddedApp:
    app: FastAPI
    material: CaMaterial
    challenge: str | None  # the generated challenge, when none was configured
    repository: RequestRepository


def static_challenge(settings: Settings) -> tuple[ChallengeValidator, str | None]:
    """The configured static challenge, or a fresh one to print at start."""
    if settings.static_challenge is not None:
        return StaticChallengeValidator(settings.static_challenge.get_secret_value()), None
    generated = secrets.token_urlsafe(18)
    return StaticChallengeValidator(generated), generated


def identity_from(material: CaMaterial) -> ScepIdentity:
    return ScepIdentity(
        ra_key=material.ra.key,  # type: ignore[arg-type]  # the RA is always RSA
        ra_certificate=material.ra.certificate,
        ca_certificate=material.ca.certificate,
        previous_ca_certificates=tuple(material.chain),
    )


async def build_embedded_app(settings: Settings) -> EmbeddedApp:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    material = ensure_lab_ca(settings.data_dir)
    url = settings.effective_database_url
    await upgrade_to_head(url)
    engine = create_engine_for(url)
    repository = RequestRepository(session_factory(engine))
    if settings.challenge_provider != "static":
        raise SystemExit(
            f"SCEPLINE_CHALLENGE_PROVIDER={settings.challenge_provider} is not available yet"
        )
    challenge, generated = static_challenge(settings)
    profile = CertificateProfile(validity_days=settings.cert_validity_days)
    pipeline = InlinePipeline(
        repository=repository,
        handlers={
            Step.VALIDATE: partial(handle_validate, deps=ValidatorDeps(repository, challenge)),
            Step.SIGN: partial(handle_sign, deps=SignerDeps(repository, material.ca, profile)),
            Step.NOTIFY: partial(handle_notify, deps=NotifierDeps(repository)),
        },
    )
    sweeper = Sweeper(repository=repository, pipeline=pipeline)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sweep = asyncio.create_task(sweeper.run())
        try:
            yield
        finally:
            sweeper.stop()
            await sweep
            await pipeline.close()
            await engine.dispose()

    app = build_ingress_app(
        settings,
        identity=identity_from(material),
        repository=repository,
        pipeline=pipeline,
        readiness=partial(database_ready, engine),
        lifespan=lifespan,
    )
    return EmbeddedApp(app=app, material=material, challenge=generated, repository=repository)


async def database_ready(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - readiness reports, it does not raise
        log.warning("database not reachable")
        return False
    return True

"""Ingress wiring: build the SCEP app from settings and its collaborators."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

from fastapi import FastAPI

from scepline_shared.endpoints import Endpoints
from scepline_shared.health import ReadinessCheck
from scepline_shared.ocsp.http import OcspHttp
from scepline_shared.pipeline import Pipeline
from scepline_shared.settings import Settings

from .http import create_app
from .identity import IdentitySource, ScepIdentity
from .ports import IngressStore
from .service import ScepOptions, ScepService

__all__ = ["build_ingress_app", "options_from"]


def options_from(settings: Settings) -> ScepOptions:
    return ScepOptions(
        allow_des=settings.scep_allow_des,
        max_clock_skew=dt.timedelta(seconds=settings.scep_max_clock_skew_seconds),
        include_chain_in_cert_rep=settings.scep_certrep_include_chain,
        sync_wait_seconds=settings.sync_wait_seconds,
    )


def build_ingress_app(
    settings: Settings,
    *,
    identity: ScepIdentity | IdentitySource,
    repository: IngressStore,
    pipeline: Pipeline,
    readiness: ReadinessCheck | None = None,
    lifespan: Callable[[FastAPI], object] | None = None,
    ocsp: OcspHttp | None = None,
    endpoints: Endpoints | None = None,
    endpoint_identities: Mapping[str, IdentitySource] | None = None,
) -> FastAPI:
    """The ingress app. ``identity`` is a fixed ScepIdentity, or a source of the
    current one (``identity.schedule_identities(watcher.current)``) that every
    operation calls once, so a CA rollover takes effect without a restart.
    ``ocsp``: the OCSP responder, answering /ocsp on the SCEP port too.
    ``endpoints``: the SCEP endpoints to route to (None: the default one);
    ``endpoint_identities``: the identity of each endpoint whose CA is not the
    default one."""
    service = ScepService(
        identities=identity,
        repository=repository,
        pipeline=pipeline,
        options=options_from(settings),
        endpoint_identities=endpoint_identities,
        enrolment_limits=(
            {} if endpoints is None else {e.name: e.enrolments_per_minute for e in endpoints}
        ),
        sync_waits=(
            {}
            if endpoints is None
            else {e.name: e.sync_wait_seconds for e in endpoints if e.sync_wait_seconds is not None}
        ),
    )
    return create_app(
        service,
        max_body_bytes=settings.http_max_body_bytes,
        body_timeout_seconds=settings.http_body_timeout_seconds,
        readiness=readiness,
        lifespan=lifespan,
        public_base_url=settings.public_base_url,
        ocsp=ocsp,
        endpoints=endpoints,
    )

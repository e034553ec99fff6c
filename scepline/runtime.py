"""Composition root: builds each service's process from settings.

``scepline up`` runs ingress and the three workers in one process over the
configured broker (in-process by default); ``scepline ingress|validator|signer|
notifier`` run one service each, normally over RabbitMQ. Every process opens its
own store and broker connections after start-up, in the event loop it serves
from (HSM sessions and pooled connections must not cross a fork or a loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI

import scepline_notifier.main as notifier
import scepline_signer.main as signer
import scepline_validator.main as validator
from scepline_ingress.broker_pipeline import BrokerPipeline
from scepline_ingress.identity import IdentitySource, schedule_identities
from scepline_ingress.main import build_ingress_app
from scepline_ingress.queue_metrics import QueueDepthReporter
from scepline_ingress.sweeper import Sweeper
from scepline_shared.broker.base import Broker
from scepline_shared.ca import CaMaterial
from scepline_shared.ca.keysource import KeySource, key_location
from scepline_shared.ca.schedule import CaSchedule, CaScheduleWatcher, init_ca
from scepline_shared.configured import (
    ca_root,
    default_ca,
    endpoints_from,
    intune_config_for,
    key_source,
    ocsp_http_from,
)
from scepline_shared.endpoints import DEFAULT_CA, CaSpec, Endpoints
from scepline_shared.health import ReadinessCheck, health_app, health_routes
from scepline_shared.intune import IntuneClient, IntuneConfigurationError
from scepline_shared.keys import KeyPair
from scepline_shared.log import get_logger
from scepline_shared.ocsp.http import OcspPaths
from scepline_shared.pipeline import Step, StepHandler
from scepline_shared.private_files import private_directory
from scepline_shared.settings import Settings
from scepline_shared.store.repository import RequestRepository
from scepline_shared.store.views import RequestView
from scepline_shared.worker import DeadLetterHook, InlineStep, RetryPolicy, StepWorker

from .connections import Runtime, certificate_store, redacted, runtime, store_answers
from .http_server import Listener, bind_port, serve_http
from .intune_status import reporting

__all__ = [
    "UP_HEALTH_PORT",
    "Cas",
    "Embedded",
    "Runtime",
    "admin_app",
    "admin_port",
    "create_ca",
    "embedded",
    "intune_client",
    "intune_clients",
    "open_ca",
    "open_cas",
    "serve_admin_api",
    "serve_embedded",
    "serve_ingress",
    "serve_worker",
    "up_health_port",
]

if TYPE_CHECKING:
    from .admin_api.context import QueueDepths

log = get_logger(__name__)

# Where `scepline up` serves /metrics, /healthz and /readyz when
# SCEPLINE_HEALTH_PORT is unset (on SCEPLINE_HEALTH_HOST, loopback by default).
UP_HEALTH_PORT = 9100


def _dead_letter_hook(step: Step, repository: RequestRepository) -> DeadLetterHook:
    notify_dead = notifier.build_dead_letter_hook(repository) if step is Step.NOTIFY else None

    async def park(transaction_id: str, reason: str) -> None:
        await repository.park(transaction_id=transaction_id, reason=f"{step.value}: {reason}")
        if notify_dead is not None:
            await notify_dead(transaction_id, reason)

    return park


def create_ca(
    settings: Settings, keys: KeySource | None = None, ca: CaSpec | None = None
) -> CaSchedule:
    """Create CA ``ca`` (default: the settings' CA) and its RA where missing
    (files or token, as configured); idempotent."""
    spec = ca if ca is not None else default_ca(settings)
    root = ca_root(settings.data_dir, spec.name)
    private_directory(settings.data_dir)
    private_directory(root)
    return init_ca(
        root,
        keys if keys is not None else key_source(settings, spec.name),
        ca_key_type=spec.key_type,
        ca_key_size=spec.key_size,
        ca_common_name=spec.common_name,
        ra_common_name=spec.ra_common_name,
        validity_days=spec.validity_days,
    )


def open_ca(
    settings: Settings, *, create: bool = False, ca: CaSpec | None = None
) -> CaScheduleWatcher:
    """A CA schedule this process serves from (default: the settings' CA),
    checked at start (every token key proves it matches its certificate) and
    reloaded when `scepline ca rollover` stages a generation. ``create``: make
    the CA first (``scepline up``)."""
    spec = ca if ca is not None else default_ca(settings)
    keys = key_source(settings, spec.name)
    if create:
        create_ca(settings, keys, spec)
    watcher = CaScheduleWatcher(ca_root(settings.data_dir, spec.name), keys)
    active = watcher.current().active()
    log.info(
        "CA loaded and its keys proven",
        ca=spec.name,
        generation=active.number,
        ca_subject=active.material.ca.certificate.subject.rfc4514_string(),
        ca_key=key_location(active.material.ca.key),
        ra_key=key_location(active.material.ra.key),
    )
    return watcher


def issuing_cas(schedule: CaSchedule) -> list[KeyPair]:
    """The CAs that sign CRLs now: the active one and the previous ones still valid."""
    return [schedule.active().material.ca, *(g.material.ca for g in schedule.previous())]


@dataclass(frozen=True)
class Cas:
    """Every CA schedule this process serves from, by CA name (``default`` and
    each ``[cas.NAME]`` of the configuration file)."""

    watchers: Mapping[str, CaScheduleWatcher]

    @property
    def default(self) -> CaScheduleWatcher:
        return self.watchers[DEFAULT_CA]

    def jobs(self) -> list[Job]:
        """Each schedule's watcher, as a background job."""
        return [(watcher.run, watcher.stop) for watcher in self.watchers.values()]

    def issuing(self) -> list[KeyPair]:
        """Every CA key that signs CRLs now, of every CA."""
        return [ca for w in self.watchers.values() for ca in issuing_cas(w.current())]

    def signing(self) -> dict[str, Callable[[], KeyPair]]:
        """Each named CA's active key pair now (for the signer), by CA name."""
        return {
            name: functools.partial(_active_ca, watcher)
            for name, watcher in self.watchers.items()
            if name != DEFAULT_CA
        }

    def identities(self, endpoints: Endpoints) -> dict[str, IdentitySource]:
        """The SCEP identity of each endpoint whose CA is a named one."""
        return {
            endpoint.name: schedule_identities(self.watchers[endpoint.ca].current)
            for endpoint in endpoints
            if endpoint.ca != DEFAULT_CA
        }


def _active_ca(watcher: CaScheduleWatcher) -> KeyPair:
    return watcher.current().material().ca


def open_cas(settings: Settings, endpoints: Endpoints, *, create: bool = False) -> Cas:
    """Every CA of the deployment, opened (``create``: made first where missing)."""
    specs = dict(endpoints.cas) or {DEFAULT_CA: default_ca(settings)}
    specs.setdefault(DEFAULT_CA, default_ca(settings))
    return Cas({name: open_ca(settings, create=create, ca=spec) for name, spec in specs.items()})


# A background job: (run, stop).
Job = tuple[Callable[[], Awaitable[None]], Callable[[], None]]


@contextlib.asynccontextmanager
async def _background(*jobs: Job) -> AsyncIterator[None]:
    """Run (run, stop) pairs as tasks for the life of the block."""
    tasks = [asyncio.create_task(run()) for run, _ in jobs]
    try:
        yield
    finally:
        for _, stop in jobs:
            stop()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=10)


# Each Intune endpoint's client (its tenant's), by endpoint name.
IntuneClients = dict[str, IntuneClient]


@contextlib.asynccontextmanager
async def intune_clients(settings: Settings, endpoints: Endpoints) -> AsyncIterator[IntuneClients]:
    """The process's Intune clients (their token and discovery caches): one per
    app registration, shared by the endpoints that use it (those without an
    ``[intune]`` table use the SCEPLINE_INTUNE_* one), by endpoint name."""
    by_config: dict[object, IntuneClient] = {}
    clients: IntuneClients = {}
    try:
        for endpoint in endpoints:
            if endpoint.provider != "intune":
                continue
            try:
                config = intune_config_for(settings, endpoint)
            except IntuneConfigurationError as error:
                raise SystemExit(f"Intune provider of endpoint {endpoint.name}: {error}") from None
            if config not in by_config:
                by_config[config] = IntuneClient(config)
            clients[endpoint.name] = by_config[config]
        yield clients
    finally:
        for client in by_config.values():
            await client.aclose()


@contextlib.asynccontextmanager
async def intune_client(settings: Settings) -> AsyncIterator[IntuneClient | None]:
    """The Intune client of the SCEPLINE_INTUNE_* settings, if an Intune endpoint
    uses them (the default one, or one without an ``[intune]`` table)."""
    if not any(e.provider == "intune" and e.intune is None for e in endpoints_from(settings)):
        yield None
        return
    try:
        client = IntuneClient.from_settings(settings)
    except IntuneConfigurationError as error:
        raise SystemExit(f"Intune provider: {error}") from None
    try:
        yield client
    finally:
        await client.aclose()


# Validation policies of every endpoint, by name (validator.endpoint_policies).
Policies = dict[str, "validator.EndpointPolicy"]


def only_for(endpoints: frozenset[str], handler: StepHandler) -> StepHandler:
    """``handler`` inline for the requests of ``endpoints`` (all of them: plainly)."""

    def applies(request: RequestView) -> bool:
        return request.endpoint in endpoints

    return InlineStep(handler, applies)


def build_worker(
    step: Step,
    rt: Runtime,
    endpoints: Endpoints,
    *,
    cas: Cas | None = None,
    policies: Policies | None = None,
    intune: IntuneClients | None = None,
) -> StepWorker:
    settings = rt.settings
    if step is Step.VALIDATE:
        assert policies is not None
        handler = validator.build_handler(rt.repository, policies)
    elif step is Step.SIGN:
        assert cas is not None
        handler = signer.build_handler(
            settings,
            rt.repository,
            functools.partial(_active_ca, cas.default),
            endpoints=endpoints,
            cas=cas.signing(),
        )
    else:
        handler = notifier.build_handler(settings, rt.repository, intune, endpoints=endpoints)
    inline: dict[Step, StepHandler] = {}
    untold = frozenset(endpoints.names) - endpoints.with_provider("intune")
    if step is Step.SIGN and untold:
        # Nobody to notify: the release follows the signature in the signer.
        release = notifier.build_handler(
            settings, rt.repository, None, endpoints=_without_intune(endpoints)
        )
        inline[Step.NOTIFY] = (
            release if untold == frozenset(endpoints.names) else only_for(untold, release)
        )
    return StepWorker(
        step=step,
        handler=handler,
        broker=rt.broker,
        retry=RetryPolicy(
            max_attempts=settings.retry_max_attempts,
            base_delay=settings.retry_base_delay_seconds,
        ),
        on_dead_letter=_dead_letter_hook(step, rt.repository),
        inline=inline,
    )


def _without_intune(endpoints: Endpoints) -> Endpoints:
    """The endpoints whose requests nobody outside is told of."""
    kept = {e.name: e for e in endpoints if e.provider != "intune"}
    return Endpoints(kept, default=endpoints.default if endpoints.default in kept else None)


def local_validation(endpoints: Endpoints, policies: Policies) -> frozenset[str]:
    """The endpoints whose validation calls nothing outside (static, one-time,
    manual): checked where a request is recorded, without a queue hop."""
    return frozenset(
        name
        for name, policy in policies.items()
        if name in endpoints
        and not endpoints[name].calls_outside
        and (name != "default" or _local_provider(policy.challenge))
    )


def _local_provider(challenge: object) -> bool:
    return isinstance(
        challenge,
        validator.StaticChallengeValidator
        | validator.OneTimeChallengeValidator
        | validator.ManualApprovalValidator,
    )


@contextlib.asynccontextmanager
async def _ingress(
    rt: Runtime,
    cas: Cas,
    ready: ReadinessCheck,
    endpoints: Endpoints,
    policies: Policies | None,
) -> AsyncIterator[FastAPI]:
    """``policies``: the validation of the endpoints ingress checks itself (None:
    none; every request goes to the validators' queue)."""
    settings = rt.settings
    inline: dict[Step, StepHandler] = {}
    local = frozenset() if policies is None else local_validation(endpoints, policies)
    if policies is not None and local:
        # Validation that calls nothing outside: done where the request is recorded.
        handler = validator.build_handler(rt.repository, policies)
        everywhere = local == frozenset(endpoints.names)
        inline[Step.VALIDATE] = handler if everywhere else only_for(local, handler)
    pipeline = BrokerPipeline(broker=rt.broker, inline=inline)
    await pipeline.start()
    sweeper = Sweeper(
        repository=rt.repository,
        pipeline=pipeline,
        stale_after=timedelta(seconds=settings.sweep_stale_after_seconds),
        interval=settings.sweep_interval_seconds,
        approval_ttls={e.name: e.approval_ttl for e in endpoints if e.provider == "manual"},
    )
    depths = QueueDepthReporter(
        rt.broker, rt.repository, interval=settings.queue_metrics_interval_seconds
    )
    async with _background((sweeper.run, sweeper.stop), (depths.run, depths.stop)):
        yield build_ingress_app(
            settings,
            identity=schedule_identities(cas.default.current),
            repository=rt.repository,
            pipeline=pipeline,
            readiness=ready,
            ocsp=ocsp_http_from(settings, rt.repository, cas.watchers),
            endpoints=endpoints,
            endpoint_identities=cas.identities(endpoints),
        )


@dataclass(frozen=True)
class Embedded:
    app: FastAPI  # the SCEP port's
    health_app: FastAPI  # the health port's: /metrics, /healthz, /readyz
    ca: CaScheduleWatcher  # the default CA's
    challenge_file: Path | None  # the generated static challenge, when none was configured
    repository: RequestRepository
    broker: Broker
    cas: Cas | None = None  # every CA, by name
    runtime: Runtime | None = None  # the connections (the console's, on one process)
    ready: ReadinessCheck | None = None

    @property
    def material(self) -> CaMaterial:
        """The CA and RA serving now."""
        return self.ca.current().material()


@contextlib.asynccontextmanager
async def embedded(
    settings: Settings, *, challenge: validator.ChallengeValidator | None = None
) -> AsyncIterator[Embedded]:
    """Ingress and all three workers in this process (``scepline up``).

    ``challenge`` replaces the provider the settings choose for the default
    endpoint (a simulator, a test double of an external service).
    """
    endpoints = endpoints_from(settings)
    cas = await asyncio.to_thread(open_cas, settings, endpoints, create=True)
    async with intune_clients(settings, endpoints) as intune, runtime(settings) as rt:
        policies, generated = validator.endpoint_policies(
            settings, rt.repository, endpoints=endpoints, intune=intune, replace=challenge
        )
        for step in Step:
            worker = build_worker(step, rt, endpoints, cas=cas, policies=policies, intune=intune)
            await worker.start(prefetch=settings.worker_prefetch)
        await _journal_cas(rt, cas)
        crls = _crl_publisher(rt, cas)
        await crls.run_once()  # GetCRL and the CDP answer from the first request on
        responders = await _ocsp_responders(rt, cas)  # OCSP too
        ready = _readiness(rt, cas)
        async with (
            _background(
                *cas.jobs(),
                (crls.run, crls.stop),
                *responders,
                *_revocations(rt, intune),
                *_intune_status(rt, intune),
            ),
            _ingress(rt, cas, ready, endpoints, policies) as app,
        ):
            yield Embedded(
                app,
                health_app(ready),
                cas.default,
                generated,
                rt.repository,
                rt.broker,
                cas=cas,
                runtime=rt,
                ready=ready,
            )


def _intune_status(rt: Runtime, intune: IntuneClients) -> list[Job]:
    """This process's Intune calls (every tenant's), reported in the store for the console."""
    reporter = reporting(list(intune.values()), rt.admin)
    return [] if reporter is None else [(reporter.run, reporter.stop)]


def _revocations(rt: Runtime, intune: IntuneClients) -> list[Job]:
    """Intune's revocation requests: polled where the notifier runs, from each
    tenant, which may revoke only its endpoints' certificates."""
    tenants: dict[int, tuple[IntuneClient, list[str]]] = {}
    for endpoint, client in intune.items():
        tenants.setdefault(id(client), (client, []))[1].append(endpoint)
    jobs: list[Job] = []
    for client, names in tenants.values():
        sync = notifier.build_revocation_sync(rt.settings, rt.repository, client, endpoints=names)
        if sync is not None:
            jobs.append((sync.run, sync.stop))
    return jobs


async def _ocsp_responders(rt: Runtime, cas: Cas) -> list[Job]:
    """The delegated OCSP responder certificates of every CA: issued now (so
    OCSP answers from the first request on), then renewed in the background."""
    jobs: list[Job] = []
    for name, watcher in cas.watchers.items():
        keeper = signer.build_ocsp_responder_keeper(
            rt.settings, rt.repository, watcher.current, name
        )
        if keeper is None:
            return []
        await keeper.run_once()
        jobs.append((keeper.run, keeper.stop))
    return jobs


async def _journal_cas(rt: Runtime, cas: Cas) -> None:
    for watcher in cas.watchers.values():
        await signer.journal_ca_certificates(rt.repository, watcher.current())


def _crl_publisher(rt: Runtime, cas: Cas) -> signer.CrlPublisher:
    return signer.build_crl_publisher(rt.settings, rt.repository, cas.issuing)


def up_health_port(settings: Settings) -> int:
    """Where ``scepline up`` serves its health port."""
    return UP_HEALTH_PORT if settings.health_port is None else settings.health_port


def prepare_embedded(settings: Settings) -> Path | None:
    """The one-time work of ``scepline up`` before its serving processes start:
    the CAs, the store (migrated, its key), the lab challenge; the generated
    challenge's file, if any."""
    endpoints = endpoints_from(settings)
    for spec in endpoints.cas.values() or [default_ca(settings)]:
        create_ca(settings, ca=spec)

    async def store_ready() -> None:
        async with runtime(settings, with_broker=False):
            pass

    asyncio.run(store_ready())
    default = endpoints.get("default")
    if default is None or default.provider != "static":
        return None
    return validator.challenge_provider(settings, None)[1]


async def serve_embedded_on(
    settings: Settings, scep_socket: socket.socket, ready: Callable[[], None]
) -> None:
    """One serving process of ``scepline up`` on every core: the whole product,
    accepting on the socket its supervisor bound (which serves the health port)."""
    async with embedded(settings) as product:
        ready()
        await serve_http(settings, Listener(product.app, scep_socket))


async def serve_embedded(settings: Settings, announce: Callable[[Embedded], None]) -> None:
    with contextlib.ExitStack() as ports:
        scep = ports.enter_context(_scep_port(settings))
        health = ports.enter_context(_health_port(settings, up_health_port(settings)))
        admin = ports.enter_context(admin_port(settings))
        async with embedded(settings) as product:
            assert product.runtime is not None
            console = admin_app(
                product.runtime, product.broker.queue_depths, serving_ready=product.ready
            )
            announce(product)
            await serve_http(
                settings,
                Listener(product.app, scep),
                Listener(product.health_app, health),
                Listener(console, admin),
            )


def admin_port(settings: Settings) -> socket.socket:
    """The management API's and console's port (never the SCEP port's)."""
    return bind_port(
        settings.admin_host,
        settings.admin_port,
        settings="SCEPLINE_ADMIN_HOST, SCEPLINE_ADMIN_PORT",
    )


def admin_app(
    rt: Runtime,
    queue_depths: QueueDepths | None = None,
    *,
    serving_ready: ReadinessCheck | None = None,
) -> FastAPI:
    """The admin port's app over this process's connections. ``queue_depths``:
    where the queue figures come from (default: the broker, unless in-process)."""
    from .admin_api.app import build_admin_app
    from .admin_api.context import AdminContext

    if queue_depths is None:
        queue_depths = (
            _no_depths
            if rt.settings.broker_url.startswith("memory://")
            else (rt.broker.queue_depths)
        )
    context = AdminContext(
        rt.settings,
        rt.engine,
        rt.repository,
        rt.admin,
        rt.broker,
        queue_depths=queue_depths,
        serving_ready=serving_ready,
    )
    return build_admin_app(context)


async def _no_depths() -> dict[str, int] | None:
    return None


async def serve_admin_api(settings: Settings, announce: Callable[[], None]) -> None:
    """The management API and console alone (``scepline admin-api``), for
    deployments whose services run apart: on the store and broker they share."""
    with contextlib.ExitStack() as ports:
        admin = ports.enter_context(admin_port(settings))
        health = _optional_health_port(settings, ports)
        in_process = settings.broker_url.startswith("memory://")
        async with runtime(settings, with_broker=not in_process) as rt:
            app = admin_app(rt)
            announce()
            await serve_http(
                settings, Listener(app, admin), *_health_listener(health, _readiness(rt, None))
            )


async def serve_ingress(settings: Settings) -> None:
    with contextlib.ExitStack() as ports:
        scep = ports.enter_context(_scep_port(settings))
        health = _optional_health_port(settings, ports)
        endpoints = endpoints_from(settings)
        cas = await asyncio.to_thread(open_cas, settings, endpoints)
        async with runtime(settings) as rt, _background(*cas.jobs()):
            ready = _readiness(rt, cas)
            # Ingress validates what calls nothing outside; Intune's is the validators'.
            policies, _ = validator.endpoint_policies(
                settings, rt.repository, endpoints=_without_intune(endpoints)
            )
            async with _ingress(rt, cas, ready, endpoints, policies) as app:
                await serve_http(settings, Listener(app, scep), *_health_listener(health, ready))


async def serve_ocsp(settings: Settings) -> None:
    """The OCSP responder alone (``scepline ocsp``): POST/GET /ocsp on the SCEP
    port setting, answering from the store for the CAs under the data
    directory. Any number of replicas; it reads certificates only, and needs
    the CA certificates and the responder keys, never the CA key (unless
    SCEPLINE_OCSP_SIGNING=ca) nor the store key."""
    with contextlib.ExitStack() as ports:
        http = ports.enter_context(_scep_port(settings))
        health = _optional_health_port(settings, ports)
        endpoints = endpoints_from(settings)
        async with certificate_store(settings) as (engine, certificates):

            async def ready() -> bool:
                return await store_answers(engine)

            app = FastAPI(title="scepline OCSP", docs_url=None, redoc_url=None, openapi_url=None)
            app.include_router(health_routes(ready))
            ocsp = ocsp_http_from(settings, certificates, endpoints.cas)
            app.add_middleware(OcspPaths, ocsp=ocsp)
            log.info("OCSP responder serving", data_dir=str(settings.data_dir))
            await serve_http(settings, Listener(app, http), *_health_listener(health, ready))


async def serve_worker(settings: Settings, step: Step) -> None:
    with contextlib.ExitStack() as ports:
        health = _optional_health_port(settings, ports)
        endpoints = endpoints_from(settings)
        # Only the signer holds the CAs (their keys prove themselves against the
        # certificates before the worker takes a message).
        cas = await asyncio.to_thread(open_cas, settings, endpoints) if step is Step.SIGN else None
        # The signer never talks to Intune; its failures reach the notifier by message.
        no_clients: contextlib.AbstractAsyncContextManager[IntuneClients] = contextlib.nullcontext(
            {}
        )
        clients = no_clients if step is Step.SIGN else intune_clients(settings, endpoints)
        async with clients as intune, runtime(settings) as rt:
            policies = None
            if step is Step.VALIDATE:
                policies, _ = validator.endpoint_policies(
                    settings, rt.repository, endpoints=endpoints, intune=intune
                )
            jobs: list[Job] = []
            if cas is not None:
                await _journal_cas(rt, cas)
                crls = _crl_publisher(rt, cas)
                jobs = [*cas.jobs(), (crls.run, crls.stop), *await _ocsp_responders(rt, cas)]
            if step is Step.NOTIFY:
                jobs += _revocations(rt, intune)
            jobs += _intune_status(rt, intune)
            worker = build_worker(step, rt, endpoints, cas=cas, policies=policies, intune=intune)
            await worker.start(prefetch=settings.worker_prefetch)
            log.info("worker started", step=step.value, broker=redacted(settings.broker_url))
            async with _background(*jobs):
                listeners = _health_listener(health, _readiness(rt, cas))
                if listeners:
                    await serve_http(settings, *listeners)
                else:
                    await _until_signalled()


# Ports are bound before any other start-up work (http_server.bind_port): a busy
# port stops the process at once, with the settings that chose it.


def _scep_port(settings: Settings) -> socket.socket:
    return bind_port(
        settings.http_host, settings.http_port, settings="SCEPLINE_HTTP_HOST, SCEPLINE_HTTP_PORT"
    )


def _health_port(settings: Settings, port: int) -> socket.socket:
    return bind_port(
        settings.health_host, port, settings="SCEPLINE_HEALTH_HOST, SCEPLINE_HEALTH_PORT"
    )


def _optional_health_port(settings: Settings, ports: contextlib.ExitStack) -> socket.socket | None:
    """The health port, where SCEPLINE_HEALTH_PORT asks for one."""
    if settings.health_port is None:
        return None
    return ports.enter_context(_health_port(settings, settings.health_port))


def _health_listener(health: socket.socket | None, ready: ReadinessCheck) -> list[Listener]:
    return [] if health is None else [Listener(health_app(ready), health)]


def _readiness(rt: Runtime, cas: Cas | None) -> ReadinessCheck:
    """Ready: the store and the broker answer and, where keys live in an HSM,
    the token does too (a process that cannot sign or decrypt says so, for the
    load balancer and the operator's alerting)."""

    async def ready() -> bool:
        if not await rt.ready():
            return False
        for watcher in () if cas is None else cas.watchers.values():
            if not await _keys_reachable(watcher):
                return False
        return True

    return ready


async def _keys_reachable(ca: CaScheduleWatcher) -> bool:
    material = ca.current().material()
    tokens = {id(t): t for t in (getattr(k.key, "token", None) for k in (material.ca, material.ra))}
    for token in tokens.values():
        if token is None:
            continue  # a file key
        try:  # opens (or re-opens) the session: a real round trip to the HSM
            await asyncio.wait_for(token.run_async(lambda _session: None), timeout=5)
        except Exception:  # noqa: BLE001 - readiness reports, it does not raise
            return False
    return True


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

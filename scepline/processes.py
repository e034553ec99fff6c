"""``scepline up`` on every core: several serving processes, one listening socket.

One Python process uses one core. With ``SCEPLINE_WORKERS`` above 1 (the
default is the number of cores), ``scepline up`` becomes a small supervisor:

- it does the one-time work first (the CA, the store's migrations and key,
  the lab challenge), so its children start on a ready data directory;
- it binds the SCEP port once and starts that many children (``spawn``, so no
  child inherits a token session, a pooled connection or an event loop), each
  the whole product as ``scepline up`` runs it in one process (ingress and the
  three steps over its own in-process broker), accepting on the shared socket;
- it serves the health port itself: ``/metrics`` gathers every child's
  (``prometheus_client``'s multiprocess mode), ``/readyz`` is ready while every
  child is; and the admin port (the management API and the console, on its own
  store connections);
- it restarts a child that dies. What a killed child held in its in-process
  queues is in the store, which all children share: the others' sweeps carry
  it on, and the claims of the sign step keep every signature single.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client import multiprocess as prometheus_multiprocess

from scepline_shared.health import health_app
from scepline_shared.log import configure_logging, get_logger
from scepline_shared.settings import Settings

from .http_server import Listener, bind_port, serve_http

__all__ = ["serve_on_every_core", "workers_for"]

log = get_logger(__name__)

# How long a child may take to start (open the CA, the store) before /readyz says so.
_BACKLOG = 1024
_RESTART_PAUSE = 1.0


def workers_for(settings: Settings) -> int:
    """Serving processes of ``scepline up``: the setting, else one per core."""
    return settings.workers if settings.workers is not None else (os.cpu_count() or 1)


@dataclass
class _Child:
    index: int
    process: SpawnProcess
    ready: Event


@dataclass
class _Supervisor:
    settings: Settings
    scep_socket: socket.socket
    metrics_dir: Path
    count: int
    children: list[_Child] = field(default_factory=list)
    stopping: bool = False

    def start(self, index: int) -> _Child:
        context = multiprocessing.get_context("spawn")
        ready = context.Event()
        process = context.Process(
            target=_serve_child,
            args=(self.scep_socket, ready),
            name=f"scepline-up-{index}",
            daemon=False,
        )
        process.start()
        log.info("serving process started", index=index, pid=process.pid)
        return _Child(index, process, ready)

    async def ready(self) -> bool:
        return len(self.children) == self.count and all(
            child.process.is_alive() and child.ready.is_set() for child in self.children
        )

    async def watch(self) -> None:
        """Restart children that die, until stopped."""
        while not self.stopping:
            await asyncio.sleep(0.5)
            for position, child in enumerate(self.children):
                if self.stopping or child.process.is_alive():
                    continue
                log.error(
                    "serving process died; restarting it",
                    index=child.index,
                    pid=child.process.pid,
                    exit_code=child.process.exitcode,
                )
                if child.process.pid is not None:
                    prometheus_multiprocess.mark_process_dead(child.process.pid, self.metrics_dir)
                await asyncio.sleep(_RESTART_PAUSE)
                self.children[position] = self.start(child.index)

    def stop(self) -> None:
        self.stopping = True
        for child in self.children:
            if child.process.is_alive():
                child.process.terminate()
        for child in self.children:
            child.process.join(timeout=15)
            if child.process.is_alive():
                child.process.kill()
                child.process.join(timeout=5)


def serve_on_every_core(
    settings: Settings,
    workers: int,
    prepare: Callable[[], object],
    announce: Callable[[], None],
    health_port: int,
) -> int:
    """Run ``workers`` serving processes until SIGINT/SIGTERM. The ports are
    bound first (a busy one stops everything with one line); ``prepare`` does
    the one-time work before any child starts; ``announce`` prints the banner
    once they are running."""
    with contextlib.ExitStack() as ports:
        scep_socket = ports.enter_context(
            bind_port(
                settings.http_host,
                settings.http_port,
                settings="SCEPLINE_HTTP_HOST, SCEPLINE_HTTP_PORT",
            )
        )
        health_socket = ports.enter_context(
            bind_port(
                settings.health_host,
                health_port,
                settings="SCEPLINE_HEALTH_HOST, SCEPLINE_HEALTH_PORT",
            )
        )
        admin_socket = ports.enter_context(
            bind_port(
                settings.admin_host,
                settings.admin_port,
                settings="SCEPLINE_ADMIN_HOST, SCEPLINE_ADMIN_PORT",
            )
        )
        prepare()
        # Bound, not yet listening: every child listens on it as it starts serving.
        scep_socket.listen(_BACKLOG)
        metrics_dir = Path(tempfile.mkdtemp(prefix="scepline-metrics-"))
        # Read by prometheus_client when a child imports it: set before they start.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        supervisor = _Supervisor(settings, scep_socket, metrics_dir, workers)
        try:
            supervisor.children = [supervisor.start(index) for index in range(workers)]
            announce()
            asyncio.run(_supervise(supervisor, health_socket, admin_socket))
        finally:
            supervisor.stop()
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


async def _supervise(
    supervisor: _Supervisor, health_socket: socket.socket, admin_socket: socket.socket
) -> None:
    """Serve the health port and the admin port (the management API and the
    console, over the supervisor's own store connections: the dead letters of
    the in-process brokers are parked requests in the store, and the queue
    depths come from the serving processes' gauges) while watching the children."""
    from .admin_api.context import queue_depths_from_registry
    from .connections import runtime
    from .runtime import admin_app

    settings = supervisor.settings
    registry = CollectorRegistry()
    prometheus_multiprocess.MultiProcessCollector(registry, str(supervisor.metrics_dir))
    health = health_app(supervisor.ready, registry=registry)
    watcher = asyncio.create_task(supervisor.watch())
    in_process = settings.broker_url.startswith("memory://")
    try:
        async with runtime(settings, with_broker=not in_process) as rt:
            depths = queue_depths_from_registry(registry) if in_process else None
            console = admin_app(rt, depths, serving_ready=supervisor.ready)
            await serve_http(
                settings, Listener(health, health_socket), Listener(console, admin_socket)
            )
    finally:
        supervisor.stopping = True
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def _serve_child(scep_socket: socket.socket, ready: Event) -> None:
    """A serving process: the whole product on the shared socket (a fresh
    interpreter; its settings come from the same environment)."""
    from .cli import use_uvloop
    from .runtime import serve_embedded_on

    # The supervisor stops children with SIGTERM; a Ctrl-C reaches the whole
    # process group, and the supervisor alone decides then.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _leave_with_the_supervisor()
    settings = Settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    use_uvloop()
    asyncio.run(serve_embedded_on(settings, scep_socket, ready.set))


def _leave_with_the_supervisor() -> None:
    """A child whose supervisor died (kill -9) stops too, instead of serving on
    unsupervised: it asks itself to terminate as soon as it is orphaned."""
    supervisor = os.getppid()

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()

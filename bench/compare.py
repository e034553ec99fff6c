"""Enrolment throughput of scepline beside micromdm's scepserver, in one run.

Starts each server on a free loopback port with a fresh CA, drives the same
load (bench/load.py: N concurrent clients, requests prepared before the clock
starts) and prints issued/s and latency percentiles, with scepline's figure as
a ratio of micromdm's. Deployments measured:

- micromdm  — Debian's `scepserver` 2.1.0 (one Go process, file depot)
- embedded  — `scepline up` (one process, in-process broker, SQLite)
- pipeline  — `scepline ingress|validator|signer|notifier` as four processes
               on RabbitMQ and PostgreSQL (needs both running locally)

    uv run python bench/compare.py --requests 2000 --concurrency 32

Each deployment first gets ``--warmup`` enrolments (default 200) at full
concurrency, outside the clock: the figures are a running server's, not its
first seconds' (connection pools growing to their working size, a PostgreSQL
backend forked per new connection, statements prepared per connection).

``--cpu`` adds, per deployment, the CPU milliseconds each process spent per
issued certificate during the measured requests (from /proc/<pid>/stat):
the servers, RabbitMQ's ``beam.smp``, the PostgreSQL backends of the run's own
database, the rest of PostgreSQL (WAL writer, checkpointer...; shared with
anything else using the server) and the load generator itself. 2 cores divided
by the sum is the ceiling on issued/s. ``--py-spy DIR`` records each scepline
process with py-spy (raw collapsed stacks, ``DIR/<deployment>-<process>.txt``;
``uv run --with py-spy python bench/compare.py ...``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from cpu import CpuMeter, PidSource, children_of, matching, py_spy
from load import run

CHALLENGE = "bench-challenge"
RABBITMQ = os.environ.get("BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_ADMIN = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(url: str, processes: list[subprocess.Popen[bytes]], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            raise RuntimeError(f"a server process exited while starting ({url})")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, params={"operation": "GetCACaps"}, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready")


# A server process: (label, argv, extra environment).
Command = tuple[str, list[str], dict[str, str]]


@dataclass
class Deployment:
    commands: list[Command]
    url: str
    # The run's own PostgreSQL database, if it has one.
    database: str | None = None


@contextlib.contextmanager
def started(
    commands: list[Command], url: str, workdir: Path
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    processes = []
    try:
        for index, (_label, argv, env) in enumerate(commands):
            log = (workdir / f"server-{index}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    argv,
                    cwd=workdir,
                    env={**os.environ, **env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        wait_ready(url, processes)
        yield {label: process for (label, _, _), process in zip(commands, processes, strict=True)}
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def micromdm(workdir: Path) -> Deployment:
    port = free_port()
    subprocess.run(
        ["scepserver", "ca", "-init", "-depot", "depot", "-keySize", "2048"],
        cwd=workdir,
        check=True,
        capture_output=True,
    )
    command = ["scepserver", "-depot", "depot", "-port", str(port), "-challenge", CHALLENGE]
    return Deployment([("scepserver", command, {})], f"http://127.0.0.1:{port}/scep")


# SCEPLINE_LOG_LEVEL of the servers (--log-level); INFO is the product's default
# and writes a JSON line per step of every request.
LOG_LEVEL = {"level": "WARNING"}


def scepline_env(workdir: Path, port: int) -> dict[str, str]:
    return {
        "SCEPLINE_DATA_DIR": str(workdir / "var"),
        "SCEPLINE_HTTP_PORT": str(port),
        "SCEPLINE_STATIC_CHALLENGE": CHALLENGE,
        "SCEPLINE_LOG_LEVEL": LOG_LEVEL["level"],
        # Same CA key as micromdm's, so the comparison signs alike.
        "SCEPLINE_CA_KEY_SIZE": "2048",
    }


def embedded(workdir: Path) -> Deployment:
    port = free_port()
    # Not the default 9100: another `scepline up` on this machine may hold it.
    env = {**scepline_env(workdir, port), "SCEPLINE_HEALTH_PORT": str(free_port())}
    command = [sys.executable, "-m", "scepline", "up"]
    return Deployment([("scepline-up", command, env)], f"http://127.0.0.1:{port}/scep")


def pipeline(workdir: Path) -> Deployment:
    port = free_port()
    database = f"scepline_bench_{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["psql", f"{POSTGRES_ADMIN}/postgres", "-qc", f'CREATE DATABASE "{database}"'],
        check=True,
        capture_output=True,
    )
    env = {
        **scepline_env(workdir, port),
        "SCEPLINE_DATABASE_URL": f"{POSTGRES_ADMIN}/{database}",
        "SCEPLINE_BROKER_URL": RABBITMQ,
        "SCEPLINE_BROKER_NAMESPACE": f"bench-{uuid.uuid4().hex[:8]}",
    }
    scepline = [sys.executable, "-m", "scepline"]
    for step in (["ca", "init"], ["db", "upgrade"]):
        subprocess.run(
            [*scepline, *step], env={**os.environ, **env}, check=True, capture_output=True
        )
    services = ["ingress", "validator", "signer", "notifier"]
    return Deployment(
        [(service, [*scepline, service], env) for service in services],
        f"http://127.0.0.1:{port}/scep",
        database=database,
    )


DEPLOYMENTS = {"micromdm": micromdm, "embedded": embedded, "pipeline": pipeline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--warmup",
        type=int,
        default=200,
        help="enrolments sent at full concurrency before the clock starts, so each "
        "server's connection pools are at their working size (a new PostgreSQL "
        "connection is a new backend process)",
    )
    parser.add_argument("--only", nargs="*", choices=list(DEPLOYMENTS), default=list(DEPLOYMENTS))
    parser.add_argument(
        "--cpu", action="store_true", help="CPU ms per issued certificate, per process"
    )
    parser.add_argument(
        "--py-spy", type=Path, metavar="DIR", help="py-spy record each scepline process into DIR"
    )
    parser.add_argument(
        "--log-level", default="WARNING", help="the scepline servers' SCEPLINE_LOG_LEVEL"
    )
    args = parser.parse_args()
    LOG_LEVEL["level"] = args.log_level
    if "micromdm" in args.only and shutil.which("scepserver") is None:
        raise SystemExit("micromdm's scepserver is missing: apt-get install scep")
    if args.py_spy and shutil.which("py-spy") is None:
        raise SystemExit("py-spy is missing: uv run --with py-spy python bench/compare.py ...")
    figures: dict[str, dict[str, float]] = {}
    cpu: dict[str, dict[str, float]] = {}
    for label in args.only:
        with tempfile.TemporaryDirectory(prefix=f"bench-{label}-") as directory:
            workdir = Path(directory)
            deployment = DEPLOYMENTS[label](workdir)
            try:
                with started(deployment.commands, deployment.url, workdir) as processes:
                    meter = CpuMeter(cpu_groups(processes, deployment.database))
                    profiled = {
                        f"{label}-{name}": process.pid
                        for name, process in processes.items()
                        if name != "scepserver"
                    }

                    @contextlib.contextmanager
                    def window(
                        meter: CpuMeter = meter, profiled: dict[str, int] = profiled
                    ) -> Iterator[None]:
                        with ExitStack() as stack:
                            if args.py_spy:
                                stack.enter_context(py_spy(profiled, args.py_spy))
                            stack.enter_context(meter.window())
                            yield

                    figures[label] = asyncio.run(
                        run(
                            url=deployment.url,
                            challenge=CHALLENGE,
                            requests=args.requests,
                            warmup=args.warmup,
                            concurrency=args.concurrency,
                            label=label,
                            window=window,
                        )
                    )
                    cpu[label] = meter.seconds
            finally:
                cleanup(deployment)
    print()
    print(
        f"{args.requests} enrolments, {args.concurrency} concurrent clients, {os.cpu_count()} CPUs"
    )
    print(
        f"{'deployment':<10} {'issued/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'vs micromdm':>12}"
    )
    reference = figures.get("micromdm", {}).get("issued_per_s")
    for label, f in figures.items():
        ratio = f"{f['issued_per_s'] / reference:.2f}x" if reference else "-"
        print(
            f"{label:<10} {f['issued_per_s']:>9.1f} {f['p50_ms']:>8.0f} {f['p95_ms']:>8.0f} "
            f"{f['p99_ms']:>8.0f} {ratio:>12}"
        )
    if args.cpu:
        for label, seconds in cpu.items():
            print_cpu(label, seconds, figures[label]["issued"])


def cpu_groups(
    processes: dict[str, subprocess.Popen[bytes]], database: str | None
) -> dict[str, PidSource]:
    groups: dict[str, PidSource] = {name: children_of(p.pid) for name, p in processes.items()}
    if database is not None:
        groups["rabbitmq"] = matching("beam.smp")
        groups["postgres (own db)"] = matching("postgres", contains=f" {database} ")
        groups["postgres (rest, shared)"] = matching("postgres", excluding=f" {database} ")
    groups["load generator"] = lambda: {os.getpid()}
    return groups


def print_cpu(label: str, seconds: dict[str, float], issued: float) -> None:
    """CPU ms per issued certificate by process, the server side's sum and its ceiling."""
    if not issued:
        return
    print()
    print(f"{label}: CPU ms per issued certificate ({int(issued)} issued)")
    server = 0.0
    for name, value in seconds.items():
        per = value * 1000 / issued
        if name != "load generator":
            server += per
        print(f"  {name:<24} {per:>7.2f}")
    total = server + seconds.get("load generator", 0.0) * 1000 / issued
    cores = os.cpu_count() or 1
    print(f"  {'servers (sum)':<24} {server:>7.2f}   ceiling {cores * 1000 / server:.0f}/s")
    print(f"  {'with load generator':<24} {total:>7.2f}   ceiling {cores * 1000 / total:.0f}/s")


def cleanup(deployment: Deployment) -> None:
    """Drop the run's database and broker namespace (quorum queues cost the broker CPU)."""
    if deployment.database is None:
        return
    subprocess.run(
        [
            "psql",
            f"{POSTGRES_ADMIN}/postgres",
            "-qc",
            f'DROP DATABASE IF EXISTS "{deployment.database}" WITH (FORCE)',
        ],
        capture_output=True,
    )
    namespace = deployment.commands[0][2].get("SCEPLINE_BROKER_NAMESPACE")
    if namespace is not None:
        asyncio.run(delete_namespace(namespace))


async def delete_namespace(namespace: str) -> None:
    import aio_pika

    from scepline_shared.broker.topology import Topology

    topology = Topology(namespace)
    with contextlib.suppress(Exception):
        connection = await aio_pika.connect(RABBITMQ, timeout=10)
        async with connection:
            channel = await connection.channel()
            for queue in topology.queue_names():
                await channel.queue_delete(queue)
            for exchange in topology.exchange_names():
                await channel.exchange_delete(exchange)


if __name__ == "__main__":
    main()

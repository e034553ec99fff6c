"""Enrolment throughput of scepline beside micromdm's scepserver, in one run.

Starts each server on a free loopback port with a fresh CA, drives the same
load (bench/load.py: N concurrent clients, requests prepared before the clock
starts) and prints issued/s and latency percentiles, with scepline's figure as
a ratio of micromdm's. Deployments measured:

- micromdm  — Debian's `scepserver` 2.1.0 (one Go process, file depot)
- embedded  — `scepline up` (one process, in-process broker, SQLite)
- pipeline  — `scepline ingress|validator|signer|notifier` as four processes
               on RabbitMQ and PostgreSQL (needs both running locally)

    uv run python bench/compare.py --requests 1000 --concurrency 32
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
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
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


@contextlib.contextmanager
def started(
    commands: list[tuple[list[str], dict[str, str]]], url: str, workdir: Path
) -> Iterator[None]:
    processes = []
    try:
        for index, (argv, env) in enumerate(commands):
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
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def micromdm(workdir: Path) -> tuple[list[tuple[list[str], dict[str, str]]], str]:
    port = free_port()
    subprocess.run(
        ["scepserver", "ca", "-init", "-depot", "depot", "-keySize", "2048"],
        cwd=workdir,
        check=True,
        capture_output=True,
    )
    command = ["scepserver", "-depot", "depot", "-port", str(port), "-challenge", CHALLENGE]
    return [(command, {})], f"http://127.0.0.1:{port}/scep"


def scepline_env(workdir: Path, port: int) -> dict[str, str]:
    return {
        "SCEPLINE_DATA_DIR": str(workdir / "var"),
        "SCEPLINE_HTTP_PORT": str(port),
        "SCEPLINE_STATIC_CHALLENGE": CHALLENGE,
        "SCEPLINE_LOG_LEVEL": "WARNING",
        # Same CA key as micromdm's, so the comparison signs alike.
        "SCEPLINE_CA_KEY_SIZE": "2048",
    }


def embedded(workdir: Path) -> tuple[list[tuple[list[str], dict[str, str]]], str]:
    port = free_port()
    env = scepline_env(workdir, port)
    return [([sys.executable, "-m", "scepline", "up"], env)], f"http://127.0.0.1:{port}/scep"


def pipeline(workdir: Path) -> tuple[list[tuple[list[str], dict[str, str]]], str]:
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
    return [([*scepline, service], env) for service in services], f"http://127.0.0.1:{port}/scep"


DEPLOYMENTS = {"micromdm": micromdm, "embedded": embedded, "pipeline": pipeline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--only", nargs="*", choices=list(DEPLOYMENTS), default=list(DEPLOYMENTS))
    args = parser.parse_args()
    if "micromdm" in args.only and shutil.which("scepserver") is None:
        raise SystemExit("micromdm's scepserver is missing: apt-get install scep")
    figures: dict[str, dict[str, float]] = {}
    for label in args.only:
        with tempfile.TemporaryDirectory(prefix=f"bench-{label}-") as directory:
            workdir = Path(directory)
            commands, url = DEPLOYMENTS[label](workdir)
            with started(commands, url, workdir):
                figures[label] = asyncio.run(
                    run(
                        url,
                        challenge=CHALLENGE,
                        requests=args.requests,
                        concurrency=args.concurrency,
                        label=label,
                    )
                )
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


if __name__ == "__main__":
    main()

"""Signer throughput: certificates issued per second by `scepline signer` processes.

Measures the sign step alone, through the real broker and store, with the CA key
in a PEM file and in a SoftHSM2 token, with one and with two signer processes,
and beside it the raw PKCS#11 signing rate of the same key on the same machine
(bench/hsm_raw.py: C_Sign in a tight loop, the ceiling of any HSM-backed signer).

For each configuration: a fresh PostgreSQL database and RabbitMQ namespace;
N requests are put in the store as VALIDATED and N sign messages queued (before
any signer runs, so publishing costs nothing in the figure); then the signer
processes start. The rate is taken between the 10th and the 90th percentile of
the signing times the store recorded, so process start-up is not counted.

    uv run python bench/signer.py --requests 3000
    uv run python bench/signer.py --backends softhsm --processes 1 2 --ca-key-size 2048
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).parent))
from compare import delete_namespace
from cpu import CpuMeter, PidSource, matching, py_spy
from hsm_raw import SOFTHSM_MODULE, bench_raw_sign_rate

from scepline_shared.broker.base import create_broker
from scepline_shared.keys import spki_sha256_hex
from scepline_shared.messages import StepMessage
from scepline_shared.pipeline import Step
from scepline_shared.store.database import create_engine_for, session_factory
from scepline_shared.store.migrate import upgrade_to_head
from scepline_shared.store.models import RequestState
from scepline_shared.store.repository import RequestRepository
from scepline_shared.store.store_key import STORE_KEY_FILE, load_store_key

RABBITMQ = os.environ.get("BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_ADMIN = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
TOKEN_LABEL = "scepline-bench"
PIN = "1234"


def softhsm_env(workdir: Path) -> dict[str, str]:
    """A fresh SoftHSM2 token store; the environment that points a process at it."""
    tokens = workdir / "tokens"
    tokens.mkdir()
    conf = workdir / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    env = {"SOFTHSM2_CONF": str(conf)}
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            TOKEN_LABEL,
            "--so-pin",
            "5678",
            "--pin",
            PIN,
        ],
        check=True,
        capture_output=True,
        env={**os.environ, **env},
    )
    return {
        **env,
        "SCEPLINE_KEY_BACKEND": "pkcs11",
        "SCEPLINE_PKCS11_MODULE": SOFTHSM_MODULE,
        "SCEPLINE_PKCS11_TOKEN_LABEL": TOKEN_LABEL,
        "SCEPLINE_PKCS11_PIN": PIN,
    }


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    name = f"scepline_bench_{uuid.uuid4().hex[:8]}"
    admin = ["psql", f"{POSTGRES_ADMIN}/postgres", "-qc"]
    subprocess.run([*admin, f'CREATE DATABASE "{name}"'], check=True, capture_output=True)
    try:
        yield f"{POSTGRES_ADMIN}/{name}"
    finally:
        subprocess.run([*admin, f'DROP DATABASE "{name}" WITH (FORCE)'], capture_output=True)


@contextlib.contextmanager
def deleted_namespace(namespace: str) -> Iterator[None]:
    """Delete the run's queues afterwards: quorum queues left behind accumulate and
    cost the broker (hundreds of them once wedged this machine's RabbitMQ)."""
    try:
        yield
    finally:
        asyncio.run(delete_namespace(namespace))


def csrs(count: int) -> list[tuple[bytes, str]]:
    """CSRs with distinct subjects; a few P-256 keys suffice (the signer does not care)."""
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(8)]
    out = []
    for index in range(count):
        key = keys[index % len(keys)]
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bench-device-{index}")])
        builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
        csr = builder.sign(key, hashes.SHA256())
        out.append((csr.public_bytes(Encoding.DER), spki_sha256_hex(key.public_key())))
    return out


async def prepare(database_url: str, data_dir: Path, namespace: str, count: int) -> None:
    """N VALIDATED requests in the store and N sign messages in the queue, their
    CSRs sealed with the data directory's store key, which the signers will use."""
    await upgrade_to_head(database_url)
    engine = create_engine_for(database_url, pool_size=8, max_overflow=0)
    sealer = load_store_key(data_dir / STORE_KEY_FILE, create=True)
    repository = RequestRepository(session_factory(engine), sealer=sealer)
    broker = create_broker(RABBITMQ, namespace=namespace)
    await broker.start()
    requests = csrs(count)

    async def one(index: int) -> None:
        csr_der, key_id = requests[index]
        transaction_id = f"bench-{index:06d}"
        await repository.record_request(
            transaction_id=transaction_id,
            signer_key_id=key_id,
            message_type=19,
            csr_der=csr_der,
            signer_cert_der=b"",
            subject=f"CN=bench-device-{index}",
        )
        await repository.transition(
            transaction_id=transaction_id,
            from_state=RequestState.RECEIVED,
            to_state=RequestState.VALIDATED,
            detail="bench",
        )
        await broker.publish(StepMessage(transaction_id=transaction_id, step=Step.SIGN))

    try:
        for start in range(0, count, 64):
            await asyncio.gather(*(one(i) for i in range(start, min(start + 64, count))))
    finally:
        await broker.close()
        await engine.dispose()


async def signing_times(database_url: str) -> list[dt.datetime]:
    engine = create_engine_for(database_url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT updated_at FROM scep_request WHERE state = :state ORDER BY updated_at"
                ),
                {"state": RequestState.SIGNED.value},
            )
            return [row[0] for row in rows]
    finally:
        await engine.dispose()


def signed_count(database_url: str) -> int:
    result = subprocess.run(
        ["psql", database_url, "-Atc", "SELECT count(*) FROM scep_request WHERE state = 'SIGNED'"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(result.stdout.strip())


def run_signers(
    env: dict[str, str], processes: int, workdir: Path, expected: int, profile: Path | None
) -> dict[str, float]:
    """Start the signers, wait until every request is signed; the CPU milliseconds
    per certificate each process group spent between 10% and 90% of the run."""
    database_url = env["SCEPLINE_DATABASE_URL"]
    started = []
    for index in range(processes):
        log = (workdir / f"signer-{index}.log").open("wb")
        started.append(
            subprocess.Popen(
                [sys.executable, "-m", "scepline", "signer"],
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    groups: dict[str, PidSource] = {
        f"signer-{i}": (lambda pid=p.pid: {pid}) for i, p in enumerate(started)
    }
    database = database_url.rsplit("/", 1)[1]
    groups["postgres"] = matching("postgres", contains=f" {database} ")
    groups["rabbitmq"] = matching("beam.smp")
    meter = CpuMeter(groups)
    try:
        deadline = time.monotonic() + 600
        first = last = 0
        with contextlib.ExitStack() as stack:
            while time.monotonic() < deadline:
                if any(p.poll() is not None for p in started):
                    raise RuntimeError(f"a signer exited; see {workdir}/signer-*.log")
                count = signed_count(database_url)
                if not first and count >= expected // 10:
                    first = count
                    stack.enter_context(meter.window())
                    if profile is not None:
                        targets = {f"signer-{i}": p.pid for i, p in enumerate(started)}
                        stack.enter_context(py_spy(targets, profile))
                if first and count >= (expected * 9) // 10:
                    last = count
                    break
                time.sleep(0.2)
            else:
                raise TimeoutError("signers did not finish in 600 s")
        while signed_count(database_url) < expected and time.monotonic() < deadline:
            time.sleep(0.2)
        return {label: 1000 * cpu / (last - first) for label, cpu in meter.seconds.items()}
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def steady_rate(times: list[dt.datetime]) -> float:
    """Certificates per second between the 10th and 90th percentile completions."""
    low, high = times[len(times) // 10], times[(len(times) * 9) // 10]
    span = (high - low).total_seconds()
    return ((len(times) * 9) // 10 - len(times) // 10) / span if span > 0 else float("inf")


def raw_rate(env: dict[str, str], workdir: Path, seconds: float) -> float:
    """C_Sign/s with the CA key in the token, in a child process (SoftHSM reads
    SOFTHSM2_CONF once per process)."""
    code = (
        "import sys; sys.path.insert(0, 'bench');"
        "from hsm_raw import bench_raw_sign_rate;"
        "from scepline_shared.keys.pkcs11 import Pkcs11Config, Pkcs11Token, load_private_key;"
        f"c = Pkcs11Config(module={SOFTHSM_MODULE!r}, token_label={TOKEN_LABEL!r}, pin={PIN!r});"
        "t = Pkcs11Token(c).open();"
        "k = load_private_key(t, 'scepline-ca');"
        f"print(bench_raw_sign_rate(t, k, {seconds}))"
    )
    assert bench_raw_sign_rate  # the same function, run where the token is configured
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    return float(result.stdout.strip().splitlines()[-1])


def measure(backend: str, processes: int, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"bench-signer-{backend}-") as directory:
        workdir = Path(directory)
        env = {
            "SCEPLINE_DATA_DIR": str(workdir / "var"),
            "SCEPLINE_LOG_LEVEL": "WARNING",
            "SCEPLINE_CA_KEY_SIZE": str(args.ca_key_size),
            "SCEPLINE_BROKER_URL": RABBITMQ,
            "SCEPLINE_BROKER_NAMESPACE": f"bench-{uuid.uuid4().hex[:8]}",
        }
        if backend == "softhsm":
            env.update(softhsm_env(workdir))
        with fresh_database() as database_url, deleted_namespace(env["SCEPLINE_BROKER_NAMESPACE"]):
            env["SCEPLINE_DATABASE_URL"] = database_url
            subprocess.run(
                [sys.executable, "-m", "scepline", "ca", "init"],
                env={**os.environ, **env},
                check=True,
                capture_output=True,
            )
            asyncio.run(
                prepare(
                    database_url,
                    Path(env["SCEPLINE_DATA_DIR"]),
                    env["SCEPLINE_BROKER_NAMESPACE"],
                    args.requests,
                )
            )
            profile = args.py_spy / f"{backend}-x{processes}" if args.py_spy else None
            cpu = run_signers(env, processes, workdir, args.requests, profile)
            figures = {"issued_per_s": steady_rate(asyncio.run(signing_times(database_url)))}
            figures.update({f"cpu_ms_per_cert {label}": ms for label, ms in cpu.items()})
            if backend == "softhsm" and processes == 1:
                figures["raw_sign_per_s"] = raw_rate(env, workdir, args.raw_seconds)
            return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument(
        "--backends", nargs="*", choices=["file", "softhsm"], default=["file", "softhsm"]
    )
    parser.add_argument("--processes", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--ca-key-size", type=int, default=3072, help="RSA CA key bits")
    parser.add_argument("--raw-seconds", type=float, default=3.0)
    parser.add_argument(
        "--py-spy", type=Path, metavar="DIR", help="py-spy record the signers into DIR"
    )
    args = parser.parse_args()
    if "softhsm" in args.backends and shutil.which("softhsm2-util") is None:
        raise SystemExit("softhsm2-util is missing: apt-get install softhsm2")
    rows = []
    for backend in args.backends:
        for processes in args.processes:
            figures = measure(backend, processes, args)
            rows.append((backend, processes, figures))
            print(f"{backend} x{processes}: {figures}", flush=True)
    print()
    print(
        f"{args.requests} certificates per run, RSA-{args.ca_key_size} CA key, "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"{'key':<8} {'signers':>7} {'issued/s':>9} {'vs 1 signer':>12} {'vs raw C_Sign':>14}"
        "   CPU ms per certificate"
    )
    single: dict[str, float] = {}
    raw: dict[str, float] = {}
    for backend, processes, figures in rows:
        rate = figures["issued_per_s"]
        if processes == 1:
            single[backend] = rate
        if "raw_sign_per_s" in figures:
            raw[backend] = figures["raw_sign_per_s"]
        scale = f"{rate / single[backend]:.2f}x" if backend in single else "-"
        versus_raw = f"{rate / raw[backend]:.0%}" if backend in raw else "-"
        cpu = "  ".join(
            f"{label.split()[-1]} {ms:.1f}"
            for label, ms in figures.items()
            if label.startswith("cpu")
        )
        print(f"{backend:<8} {processes:>7} {rate:>9.1f} {scale:>12} {versus_raw:>14}   {cpu}")
    for backend, rate in raw.items():
        print(f"raw C_Sign ({backend}, one thread, same key): {rate:.0f}/s")


if __name__ == "__main__":
    main()

"""OCSP answers per second: `scepline up` beside OpenSSL's responder, in one run.

Set-up, outside the clock: `scepline up` on free loopback ports with a fresh
data directory issues ``--certificates`` certificates through SCEP
(bench/load.py's requests), ``--initially-revoked`` of them are revoked, and
an OpenSSL CA database (``index.txt``) is written for the same certificates.
OpenSSL's responder (``openssl ocsp -index index.txt -port P``) signs with the
same delegated responder certificate and key as scepline (``ca/ocsp.crt``,
``ocsp.key``, RSA-2048), names itself by key hash (``-resp_key_id``) and gives
the same nextUpdate (one hour, ``-nmin 60``): both answers carry the same
fields and cost one RSA-2048 signature to make; scepline keeps its signed
answers (nonce-less requests), OpenSSL signs every one.

Responders, measured in turn (``--rounds N``: N times, medians reported; the
machine may be shared):

- scepline        `scepline up` (one serving process per core), POST/GET /ocsp
- openssl         `openssl ocsp -index` (one process, one connection at a time)
- openssl-multi   the same with ``-multi N`` (N child processes, default 2)

`scepline up` stays up, idle, while OpenSSL is measured (its CPU then is shown
as "scepline up (idle)"). OpenSSL 3.0's responder answers one request per
connection and spins for good on a connection closed before its request line
(as a TCP health check's, or those wrk leaves in its accept queue when it
stops): it is started again before each run of wrk and before the
verification pass, outside the clock, and ``-ignore_err`` keeps one malformed
request from ending it.

Load: wrk (C; ``apt-get install wrk``) with bench/ocsp.lua, ``--concurrency``
connections (keep-alive where the server allows it) sending DER OCSP requests
prepared before the clock: one certificate each, SHA-1 CertID, no nonce (the
RFC 5019 profile relying parties use), for certificates drawn at random (the
same sequence for every responder); the first wrk thread to reach its share
of ``--requests`` ends the run. ``--nonce`` gives every request its own nonce
(nothing can be cached); ``--method get`` sends ``GET <base>/<url-encoded
base64>``; ``--close`` asks scepline to close each connection too. Each
responder first gets ``--warmup`` requests outside the clock.

While the clock runs, one certificate is revoked every ``--revoke-every``
seconds (``--revocations`` per responder), in scepline's store (the store call
``scepline cert revoke`` makes) and in index.txt (replaced atomically; OpenSSL
3.0 reads it again at its next connection when it changed). wrk's script
checks every answer (HTTP 200, successful, the CertID of one of our
certificates) and tallies its certStatus per certificate with the time of the
last good answer: no answer may be unknown, revoked for a certificate never
revoked, or good for one revoked before the run, and the last good answer
after each revocation must come within scepline's check interval
(SCEPLINE_CRL_CHECK_INTERVAL_SECONDS, ``--check-interval``). Then, once that
interval has passed, every certificate is asked once more and its answer
verified in full: the signature, the responder certificate (the one given,
issued by the CA, id-kp-OCSPSigning), responderID, serial, status, revocation
time and reason, validity times, nonce.

    uv run python bench/ocsp.py --requests 20000 --concurrency 32 --cpu

``--cpu`` adds each process's CPU microseconds per answer (utime+stime from
/proc; wrk's from wait4). ``--py-spy DIR`` records scepline's serving
processes (``uv run --with py-spy python bench/ocsp.py ...``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import http.client
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509 import ocsp

sys.path.insert(0, str(Path(__file__).parent))
from compare import CHALLENGE, free_port, scepline_env, started
from cpu import CpuMeter, PidSource, children_of, py_spy
from load import fetch_ra, prepare, send_all

from scepline.connections import runtime
from scepline_shared.scep import ContentEncryption, PkiStatus
from scepline_shared.settings import Settings

LUA = Path(__file__).with_name("ocsp.lua")
KEY_COMPROMISE = 1  # RFC 5280 CRLReason of the revocations made here
SUBJECT_MARK = "bench-"  # bench/load.py's subjects: CN=bench-<run>-<n>


@dataclass
class Certificate:
    serial: int
    subject: x509.Name
    not_after: datetime
    der: bytes


@dataclass
class Revocation:
    at: datetime  # the revocation time the responder must say
    committed: float  # time.time() once the responder's source had it


@dataclass
class Prepared:
    """The requests a responder gets, in order: (certificate index, DER, nonce)."""

    items: list[tuple[int, bytes, bytes | None]]


@dataclass
class Figures:
    label: str
    answers: int = 0
    seconds: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    cpu_us: dict[str, float] = field(default_factory=dict)
    revocations: int = 0
    max_stale_s: float | None = None
    verified: str = ""
    load: tuple[float, float] = (0.0, 0.0)

    @property
    def per_second(self) -> float:
        return self.answers / self.seconds if self.seconds else 0.0


# ---------------------------------------------------------------- requests


def request_der(ca: x509.Certificate, certificate: Certificate, nonce: bytes | None) -> bytes:
    issued = x509.load_der_x509_certificate(certificate.der)
    builder = ocsp.OCSPRequestBuilder().add_certificate(issued, ca, hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def certid_prefix(ca: x509.Certificate) -> bytes:
    """The CertID bytes right before the serial: issuerNameHash, issuerKeyHash."""
    name_hash = hashlib.sha1(ca.subject.public_bytes()).digest()
    return b"\x04\x14" + name_hash + b"\x04\x14" + key_hash(ca.public_key())


def key_hash(key: CertificatePublicKeyTypes) -> bytes:
    """SHA-1 of the subjectPublicKey BIT STRING's value (CertID, ResponderID byKey)."""
    return x509.SubjectKeyIdentifier.from_public_key(key).digest


def serial_content(serial: int) -> bytes:
    """A positive serial's DER INTEGER contents."""
    return serial.to_bytes(serial.bit_length() // 8 + 1, "big")


def prepare_requests(
    ca: x509.Certificate, certificates: list[Certificate], count: int, *, nonce: bool, seed: int
) -> Prepared:
    """``count`` requests for certificates drawn at random (the same for every
    responder). Without nonce one DER per certificate, reused."""
    chooser = random.Random(seed)
    drawn = [chooser.randrange(len(certificates)) for _ in range(count)]
    if nonce:
        items = []
        for i in drawn:
            value = os.urandom(16)
            items.append((i, request_der(ca, certificates[i], value), value))
        return Prepared(items)
    ders = [request_der(ca, c, None) for c in certificates]
    return Prepared([(i, ders[i], None) for i in drawn])


def get_path(base: str, der: bytes) -> str:
    return base.rstrip("/") + "/" + urllib.parse.quote(base64.b64encode(der).decode(), safe="")


def write_wrk_data(
    path: Path,
    *,
    prepared: Prepared,
    certificates: list[Certificate],
    prefix: bytes,
    method: str,
    http_path: str,
    close: bool,
) -> None:
    lines = [
        f"method {method.upper()}",
        f"path {http_path}",
        f"close {int(close)}",
        f"prefix {prefix.hex()}",
        f"certs {len(certificates)}",
        *(serial_content(c.serial).hex() for c in certificates),
        f"requests {len(prepared.items)}",
    ]
    for index, der, _nonce in prepared.items:
        payload = der if method == "post" else get_path(http_path, der).encode()
        lines.append(f"{index + 1} {payload.hex()}")
    path.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    answers: int
    seconds: float
    errors: dict[str, int]
    latency_ms: dict[str, float]
    threads: list[tuple[int, int, int, int]]  # answered, not 200, not successful, no CertID
    # per certificate index: sent, good, revoked, unknown, last good at, first revoked at
    tallies: list[tuple[int, int, int, int, float, float]]
    cpu_seconds: float


def run_wrk(
    url: str, data: Path, out: Path, *, requests: int, concurrency: int, threads: int
) -> WrkResult:
    threads = max(1, min(threads, concurrency))
    quota = -(-requests // threads)
    env = {
        **os.environ,
        "BENCH_OCSP_DATA": str(data),
        "BENCH_OCSP_OUT": str(out),
        "BENCH_OCSP_QUOTA": str(quota),
        "BENCH_OCSP_THREADS": str(threads),
    }
    argv = [
        "wrk",
        f"--threads={threads}",
        f"--connections={concurrency}",
        "--duration=300s",  # a bound: the first thread at its quota ends the run
        "--timeout=10s",
        f"--script={LUA}",
        url,
    ]
    wrk = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert wrk.stdout is not None
    output = wrk.stdout.read()
    _pid, status, usage = os.wait4(wrk.pid, 0)
    wrk.returncode = os.waitstatus_to_exitcode(status)
    if wrk.returncode != 0 or not out.exists():
        raise RuntimeError(f"wrk failed ({wrk.returncode}): {output.decode(errors='replace')}")
    return _read_wrk(out, usage.ru_utime + usage.ru_stime)


def _read_wrk(out: Path, cpu_seconds: float) -> WrkResult:
    answers = 0
    seconds = 0.0
    errors: dict[str, int] = {}
    latency: dict[str, float] = {}
    threads = []
    tallies = []
    for line in out.read_text().splitlines():
        key, *values = line.split()
        if key == "summary":
            answers, seconds = int(values[0]), int(values[1]) / 1e6
        elif key == "errors":
            names = ("connect", "read", "write", "status", "timeout")
            errors = {n: int(v) for n, v in zip(names, values, strict=True) if int(v)}
        elif key == "latency":
            names = ("p50", "p90", "p95", "p99", "p99.9", "max", "mean")
            latency = {n: float(v) / 1000 for n, v in zip(names, values, strict=True)}
        elif key == "thread":
            a, b, c, d = (int(v) for v in values)
            threads.append((a, b, c, d))
        elif key == "cert":
            sent, good, revoked, unknown = (int(v) for v in values[1:5])
            tallies.append((sent, good, revoked, unknown, float(values[5]), float(values[6])))
    return WrkResult(answers, seconds, errors, latency, threads, tallies, cpu_seconds)


# ---------------------------------------------------------------- verification


class Verifier:
    """Full checks of one answer per certificate, outside the clock."""

    def __init__(self, ca: x509.Certificate, responder: x509.Certificate) -> None:
        responder.verify_directly_issued_by(ca)
        eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            raise RuntimeError("the responder certificate lacks id-kp-OCSPSigning")
        self.ca = ca
        self.responder = responder

    def check(
        self,
        body: bytes,
        certificate: Certificate,
        revocation: Revocation | None,
        nonce: bytes | None,
    ) -> str | None:
        """None if ``body`` is a right answer about ``certificate``, else what is wrong."""
        try:
            answer = ocsp.load_der_ocsp_response(body)
        except ValueError as error:
            return f"not an OCSPResponse: {error}"
        if answer.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
            return f"responseStatus {answer.response_status.name}"
        if answer.serial_number != certificate.serial:
            return f"answer about serial {answer.serial_number:x}"
        signer = next(
            (c for c in answer.certificates if c.public_key() == self.responder.public_key()),
            None,
        )
        if signer is None or signer != self.responder:
            return "not signed by the responder certificate given (or it is not included)"
        if answer.responder_key_hash != key_hash(signer.public_key()):
            return "responderID is not the responder's key hash"
        hash_algorithm = answer.signature_hash_algorithm
        assert hash_algorithm is not None
        try:
            signer.public_key().verify(  # type: ignore[call-arg, union-attr]
                answer.signature, answer.tbs_response_bytes, padding.PKCS1v15(), hash_algorithm
            )
        except Exception as error:
            return f"bad signature: {type(error).__name__}"
        now = datetime.now(UTC)
        next_update = answer.next_update_utc
        if answer.this_update_utc > now or next_update is None or next_update < now:
            return "thisUpdate/nextUpdate do not cover now"
        if revocation is None:
            if answer.certificate_status is not ocsp.OCSPCertStatus.GOOD:
                return f"{answer.certificate_status.name}, expected GOOD"
        else:
            if answer.certificate_status is not ocsp.OCSPCertStatus.REVOKED:
                return f"{answer.certificate_status.name}, expected REVOKED"
            if answer.revocation_time_utc != revocation.at.replace(microsecond=0):
                return f"revocation time {answer.revocation_time_utc}, expected {revocation.at}"
            if answer.revocation_reason is not x509.ReasonFlags.key_compromise:
                return f"revocation reason {answer.revocation_reason}"
        if nonce is not None:
            try:
                echoed = answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
            except x509.ExtensionNotFound:
                return "nonce not echoed"
            if echoed != nonce:
                return "another nonce echoed"
        return None


def verify_all(
    port: int,
    http_path: str,
    method: str,
    ca: x509.Certificate,
    certificates: list[Certificate],
    revoked: dict[int, Revocation],
    verifier: Verifier,
    *,
    nonce: bool,
) -> tuple[int, dict[str, int]]:
    """Ask once about every certificate and check each answer in full."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    failures: dict[str, int] = {}
    checked = 0
    try:
        for certificate in certificates:
            value = os.urandom(16) if nonce else None
            der = request_der(ca, certificate, value)
            for attempt in range(2):
                try:
                    if method == "post":
                        connection.request(
                            "POST",
                            http_path,
                            body=der,
                            headers={"Content-Type": "application/ocsp-request"},
                        )
                    else:
                        connection.request("GET", get_path(http_path, der))
                    response = connection.getresponse()
                    body = response.read()
                    break
                except (OSError, http.client.HTTPException):
                    connection.close()
                    if attempt:
                        raise
            problem = (
                f"HTTP {response.status}"
                if response.status != 200
                else verifier.check(body, certificate, revoked.get(certificate.serial), value)
            )
            checked += 1
            if problem is not None:
                failures[problem] = failures.get(problem, 0) + 1
    finally:
        connection.close()
    return checked, failures


# ---------------------------------------------------------------- responders


@dataclass
class Responder:
    label: str
    port: int
    http_path: str  # POST here; GET <http_path>/<base64>
    pids: PidSource
    profiled: Callable[[], dict[str, int]]
    # Revoke one certificate now; returns when the responder's source has it.
    revoke: Callable[[Certificate], Awaitable[Revocation]]
    # Revocations show within this many seconds (0: at once).
    visible_within: float
    # Called before each wrk run and before the verification pass.
    fresh: Callable[[], None] = lambda: None


def write_index(
    path: Path, certificates: list[Certificate], revoked: dict[int, Revocation]
) -> None:
    """An OpenSSL CA database (``openssl ca``'s index.txt), replaced atomically."""
    lines = []
    for certificate in certificates:
        revocation = revoked.get(certificate.serial)
        status = "V" if revocation is None else "R"
        when = "" if revocation is None else f"{_utc_time(revocation.at)},keyCompromise"
        serial = f"{certificate.serial:X}"
        serial = "0" * (len(serial) % 2) + serial  # BN_bn2hex: whole octets
        name = "".join(
            f"/{attribute.rfc4514_attribute_name}={attribute.value}"
            for attribute in certificate.subject
        )
        lines.append(
            f"{status}\t{_utc_time(certificate.not_after)}\t{when}\t{serial}\tunknown\t{name}"
        )
    staging = path.with_suffix(".new")
    staging.write_text("\n".join(lines) + "\n")
    os.replace(staging, path)  # a new inode: OpenSSL sees the change


def _utc_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%y%m%d%H%M%SZ")


class OpenSslResponder:
    """``openssl ocsp -index``, started again before each run of wrk: OpenSSL
    3.0's responder spins for good on a connection closed before its request
    line (it reads EOF, and reads again), as the connections wrk still had in
    the responder's accept queue when it stopped are."""

    def __init__(
        self,
        workdir: Path,
        ca_dir: Path,
        index: Path,
        revoke: Callable[[Certificate], Awaitable[Revocation]],
        *,
        multi: int,
    ) -> None:
        self.workdir = workdir
        self.revoke = revoke
        self.multi = multi
        self.argv = [
            "openssl",
            "ocsp",
            "-index",
            str(index),
            "-CA",
            str(ca_dir / "ca.crt"),
            "-rsigner",
            str(ca_dir / "ocsp.crt"),
            "-rkey",
            str(ca_dir / "ocsp.key"),
            "-nmin",
            "60",  # nextUpdate an hour on, like SCEPLINE_OCSP_RESPONSE_VALIDITY_SECONDS
            "-resp_key_id",  # responderID byKey, like scepline (RFC 5019 2.2.2)
            "-ignore_err",  # else one malformed request ends the responder
            "-timeout",
            "10",
        ]
        if multi > 1:
            self.argv += ["-multi", str(multi)]
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        self.stop()
        self.port = free_port()
        log = (self.workdir / f"openssl-{self.multi}.log").open("ab")
        self.process = subprocess.Popen(
            [*self.argv, "-port", str(self.port)],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group (not a session: -multi's setpgid would fail).
            process_group=0,
        )
        _wait_http(self.port, self.process)

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)  # -multi: the children too
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def pids(self) -> set[int]:
        return set() if self.process is None else children_of(self.process.pid)()

    @contextlib.contextmanager
    def serving(self) -> Iterator[Responder]:
        self.start()
        label = "openssl" if self.multi <= 1 else f"openssl -multi {self.multi}"
        responder = Responder(label, self.port, "/", self.pids, dict, self.revoke, 0.0)

        def fresh() -> None:
            self.start()
            responder.port = self.port

        responder.fresh = fresh
        try:
            yield responder
        finally:
            self.stop()


def _wait_http(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Until ``GET /`` answers (a real request: a bare connection would wedge OpenSSL)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("openssl ocsp exited while starting")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", "/")
            if connection.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            time.sleep(0.1)
        finally:
            connection.close()
    raise TimeoutError(f"openssl ocsp not answering on port {port}")


# ---------------------------------------------------------------- the run


async def issue(url: str, count: int) -> None:
    async with httpx.AsyncClient(timeout=120) as client:
        ra = await fetch_ra(client, url)
    prepared = await asyncio.to_thread(
        prepare, count, 8, ra, CHALLENGE, ContentEncryption.AES128_CBC
    )
    results, elapsed = await send_all(url, prepared, 32)
    failed = [r for r in results if r.status != PkiStatus.SUCCESS.name]
    if failed:
        raise RuntimeError(f"{len(failed)} of {count} enrolments failed: {failed[:3]}")
    print(f"set-up: {count} certificates issued in {elapsed:.1f} s", flush=True)


async def measure(
    responder: Responder,
    args: argparse.Namespace,
    *,
    ca: x509.Certificate,
    certificates: list[Certificate],
    revoked: dict[int, Revocation],
    to_revoke: list[Certificate],
    verifier: Verifier,
    workdir: Path,
    idle: dict[str, PidSource] | None = None,
) -> Figures:
    figures = Figures(responder.label)
    prefix = certid_prefix(ca)
    slug = responder.label.replace(" ", "").replace("-", "") + f"-{len(revoked)}"

    def data_for(prepared: Prepared, name: str) -> Path:
        path = workdir / f"{slug}-{name}.txt"
        write_wrk_data(
            path,
            prepared=prepared,
            certificates=certificates,
            prefix=prefix,
            method=args.method,
            http_path=responder.http_path,
            close=args.close,
        )
        return path

    warmup = prepare_requests(ca, certificates, args.warmup, nonce=args.nonce, seed=2)
    measured = prepare_requests(ca, certificates, args.requests, nonce=args.nonce, seed=1)
    if args.warmup:
        await asyncio.to_thread(
            run_wrk,
            f"http://127.0.0.1:{responder.port}",
            data_for(warmup, "warmup"),
            workdir / f"{slug}-warmup.out",
            requests=args.warmup,
            concurrency=args.concurrency,
            threads=args.threads,
        )
    data = data_for(measured, "measured")
    await asyncio.to_thread(responder.fresh)
    meter = CpuMeter(
        {"server": responder.pids, "bench (revocations)": lambda: {os.getpid()}, **(idle or {})}
    )
    landed: list[tuple[Certificate, Revocation]] = []
    finished = threading.Event()

    async def revocations() -> None:
        for certificate in to_revoke[: args.revocations]:
            if finished.is_set():
                return
            landed.append((certificate, await responder.revoke(certificate)))
            await asyncio.sleep(args.revoke_every)

    with ExitStack() as stack:
        if args.py_spy and responder.profiled():
            stack.enter_context(py_spy(responder.profiled(), args.py_spy / slug))
        load_before = os.getloadavg()[0]
        with meter.window():
            revoker = asyncio.create_task(revocations())
            try:
                result = await asyncio.to_thread(
                    run_wrk,
                    f"http://127.0.0.1:{responder.port}",
                    data,
                    workdir / f"{slug}-measured.out",
                    requests=args.requests,
                    concurrency=args.concurrency,
                    threads=args.threads,
                )
            finally:
                finished.set()
                await revoker
        figures.load = (load_before, os.getloadavg()[0])
    figures.answers = result.answers
    figures.seconds = result.seconds
    figures.latency_ms = result.latency_ms
    figures.errors = dict(result.errors)
    figures.revocations = len(landed)
    answers = result.answers or 1
    figures.cpu_us = {name: s * 1e6 / answers for name, s in meter.seconds.items()}
    figures.cpu_us["wrk"] = result.cpu_seconds * 1e6 / answers
    for name, index in (("not 200", 1), ("not successful", 2), ("no CertID of ours", 3)):
        count = sum(thread[index] for thread in result.threads)
        if count:
            figures.errors[name] = count
    check_tallies(figures, result, certificates, revoked, landed, responder.visible_within)
    # Every revocation must show by now: wait out the check interval, then ask
    # about every certificate once and verify each answer in full.
    if landed:
        wait = landed[-1][1].committed + responder.visible_within + 0.5 - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
    await asyncio.to_thread(responder.fresh)
    checked, failures = await asyncio.to_thread(
        verify_all,
        responder.port,
        responder.http_path,
        args.method,
        ca,
        certificates,
        revoked,
        verifier,
        nonce=args.nonce,
    )
    figures.verified = (
        f"{checked} of {checked} verified"
        if not failures
        else f"{sum(failures.values())} of {checked} WRONG: {failures}"
    )
    report(figures)
    return figures


def check_tallies(
    figures: Figures,
    result: WrkResult,
    certificates: list[Certificate],
    revoked: dict[int, Revocation],
    landed: list[tuple[Certificate, Revocation]],
    visible_within: float,
) -> None:
    """What wrk saw against what was true when: no unknown, no revoked for a
    certificate never revoked, no good after a revocation once the responder's
    interval has passed; the latest good answer after each revocation."""
    during = {certificate.serial for certificate, _ in landed}
    answered = sum(t[1] + t[2] + t[3] for t in result.tallies)
    wrong: dict[str, int] = {}
    stale = []
    for certificate, (_sent, good, revoked_count, unknown, last_good, _first) in zip(
        certificates, result.tallies, strict=True
    ):
        revocation = revoked.get(certificate.serial)
        if unknown:
            wrong["unknown"] = wrong.get("unknown", 0) + unknown
        if revocation is None and revoked_count:
            wrong["revoked, never was"] = wrong.get("revoked, never was", 0) + revoked_count
        if revocation is not None and certificate.serial not in during and good:
            wrong["good, revoked before"] = wrong.get("good, revoked before", 0) + good
        if certificate.serial in during and good and last_good > revocation.committed:
            stale.append(last_good - revocation.committed)
    figures.max_stale_s = max(stale, default=0.0)
    if figures.max_stale_s > visible_within + 1.0:
        wrong[f"good {figures.max_stale_s:.1f} s after a revocation"] = len(stale)
    if answered + sum(t[1] + t[2] + t[3] for t in result.threads) != result.answers:
        wrong["answers not tallied"] = result.answers - answered
    for name, count in wrong.items():
        figures.errors[name] = count


def report(figures: Figures) -> None:
    latency = figures.latency_ms
    errors = f"; errors {figures.errors}" if figures.errors else ""
    stale = (
        f", last good answer {figures.max_stale_s:.2f} s after a revocation"
        if figures.max_stale_s
        else ""
    )
    print(
        f"{figures.label}: {figures.answers} answers in {figures.seconds:.2f} s = "
        f"{figures.per_second:.0f}/s; latency p50 {latency.get('p50', 0):.1f} ms, "
        f"p95 {latency.get('p95', 0):.1f} ms, p99 {latency.get('p99', 0):.1f} ms, "
        f"max {latency.get('max', 0):.0f} ms; {figures.revocations} revoked while "
        f"measuring{stale}; {figures.verified}; load {figures.load[0]:.2f} -> "
        f"{figures.load[1]:.2f}{errors}",
        flush=True,
    )


async def run(args: argparse.Namespace) -> list[Figures]:
    figures: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="bench-ocsp-") as directory:
        workdir = Path(directory)
        port = free_port()
        data_dir = workdir / "var"
        env = {
            **scepline_env(workdir, port),
            "SCEPLINE_HEALTH_PORT": str(free_port()),
            "SCEPLINE_CRL_CHECK_INTERVAL_SECONDS": str(args.check_interval),
        }
        if args.workers:
            env["SCEPLINE_WORKERS"] = str(args.workers)
        settings = Settings(
            data_dir=data_dir, crl_check_interval_seconds=args.check_interval, log_level="WARNING"
        )
        scep_url = f"http://127.0.0.1:{port}/scep"
        command = [sys.executable, "-m", "scepline", "up"]
        with started([("scepline-up", command, env)], scep_url, workdir) as processes:
            up = processes["scepline-up"]
            await issue(scep_url, args.certificates)
            async with runtime(settings, with_broker=False) as rt:
                views = await rt.repository.find_certificates(
                    SUBJECT_MARK, limit=args.certificates + 10
                )
                certificates = sorted(
                    (
                        Certificate(
                            serial=int(view.serial, 16),
                            subject=x509.load_der_x509_certificate(view.der).subject,
                            not_after=view.not_after,
                            der=view.der,
                        )
                        for view in views
                        if view.der is not None
                    ),
                    key=lambda c: c.serial,
                )
                if len(certificates) != args.certificates:
                    raise RuntimeError(f"{len(certificates)} certificates in the store")
                ca_dir = data_dir / "ca"
                ca = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
                verifier = Verifier(
                    ca, x509.load_pem_x509_certificate((ca_dir / "ocsp.crt").read_bytes())
                )
                pool = list(certificates)
                random.Random(3).shuffle(pool)
                revoked: dict[int, Revocation] = {}
                index = workdir / "index.txt"
                (workdir / "index.txt.attr").write_text("unique_subject = no\n")

                async def revoke(certificate: Certificate) -> Revocation:
                    """In scepline's store and OpenSSL's index.txt alike (one truth
                    for every responder, whichever is measured)."""
                    view = await rt.repository.revoke(certificate.serial, reason=KEY_COMPROMISE)
                    assert view is not None and view.revoked_at is not None
                    revocation = Revocation(view.revoked_at, 0.0)
                    revoked[certificate.serial] = revocation
                    write_index(index, certificates, revoked)
                    revocation.committed = time.time()
                    return revocation

                initial = round(len(pool) * args.initially_revoked)
                for certificate in pool[:initial]:
                    await revoke(certificate)
                del pool[:initial]
                write_index(index, certificates, revoked)
                print(
                    f"set-up: {initial} of {len(certificates)} revoked before measuring; "
                    f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
                    flush=True,
                )

                def take() -> list[Certificate]:
                    taken = pool[: args.revocations]
                    del pool[: args.revocations]
                    return taken

                def serving() -> dict[str, int]:
                    return {f"up-{pid}": pid for pid in children_of(up.pid)() if pid != up.pid}

                scepline = Responder(
                    f"scepline up ({args.workers or os.cpu_count()} processes)",
                    port,
                    "/ocsp",
                    children_of(up.pid),
                    serving,
                    revoke,
                    args.check_interval,
                )
                common = {
                    "ca": ca,
                    "certificates": certificates,
                    "revoked": revoked,
                    "verifier": verifier,
                    "workdir": workdir,
                }
                for round_number in range(1, args.rounds + 1):
                    if args.rounds > 1:
                        print(f"round {round_number} of {args.rounds}", flush=True)
                    for mode in args.only:
                        if mode == "scepline":
                            figures.append(
                                await measure(scepline, args, to_revoke=take(), **common)
                            )
                            continue
                        multi = 1 if mode == "openssl" else args.multi
                        openssl = OpenSslResponder(workdir, ca_dir, index, revoke, multi=multi)
                        with openssl.serving() as responder:
                            figures.append(
                                await measure(
                                    responder,
                                    args,
                                    to_revoke=take(),
                                    # scepline up stays up, idle: its share is shown.
                                    idle={"scepline up (idle)": children_of(up.pid)},
                                    **common,
                                )
                            )
    return figures


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def summary(figures: list[Figures], args: argparse.Namespace) -> None:
    print()
    mode = f"{args.method.upper()}{', nonce' if args.nonce else ''}"
    mode += ", Connection: close" if args.close else ""
    rounds = f", medians of {args.rounds} rounds" if args.rounds > 1 else ""
    print(
        f"{args.requests} OCSP requests ({mode}) for {args.certificates} certificates, "
        f"{args.concurrency} concurrent clients, {os.cpu_count()} CPUs{rounds}"
    )
    labels = list(dict.fromkeys(f.label for f in figures))
    by_label = {label: [f for f in figures if f.label == label] for label in labels}
    rate = {label: median([f.per_second for f in runs]) for label, runs in by_label.items()}
    references = [label for label in labels if label.startswith("openssl")]
    head = f"{'responder':<26} {'answers/s':>10} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"
    head += "".join(f" {'vs ' + name:>20}" for name in references) + "  load (1 min)"
    print(head)
    for label, runs in by_label.items():
        latency = {
            p: median([f.latency_ms.get(p, 0.0) for f in runs]) for p in ("p50", "p95", "p99")
        }
        line = (
            f"{label:<26} {rate[label]:>10.0f} {latency['p50']:>7.1f} "
            f"{latency['p95']:>7.1f} {latency['p99']:>7.1f}"
        )
        for name in references:
            line += f" {rate[label] / rate[name]:>19.2f}x" if rate[name] else " -"
        loads = [value for f in runs for value in f.load]
        print(line + f"  {min(loads):.2f}-{max(loads):.2f}")
    if args.rounds > 1 and "scepline" in args.only:
        scepline = by_label[labels[args.only.index("scepline")]]
        for name in references:
            ratios = [
                f"{mine.per_second / theirs.per_second:.2f}x"
                for mine, theirs in zip(scepline, by_label[name], strict=False)
                if theirs.per_second
            ]
            print(f"scepline / {name}, round by round: {', '.join(ratios)}")
    if args.cpu:
        print()
        print("CPU microseconds per answer (medians):")
        for label, runs in by_label.items():
            names = list(dict.fromkeys(name for f in runs for name in f.cpu_us))
            values = {name: median([f.cpu_us.get(name, 0.0) for f in runs]) for name in names}
            parts = ", ".join(f"{name} {value:.0f}" for name, value in values.items())
            total = sum(value for name, value in values.items() if "(idle)" not in name)
            ceiling = (os.cpu_count() or 1) * 1e6 / total if total else 0
            print(f"  {label:<26} {parts}; all {total:.0f} (ceiling {ceiling:.0f}/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certificates", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="wrk threads")
    parser.add_argument(
        "--warmup", type=int, help="requests before the clock (default: 3 per certificate)"
    )
    parser.add_argument("--method", choices=["post", "get"], default="post")
    parser.add_argument("--nonce", action="store_true", help="a fresh nonce in every request")
    parser.add_argument(
        "--close", action="store_true", help="Connection: close on every request (no keep-alive)"
    )
    parser.add_argument("--check-interval", type=float, default=5.0, metavar="SECONDS")
    parser.add_argument("--workers", type=int, help="SCEPLINE_WORKERS (default: one per core)")
    parser.add_argument("--multi", type=int, default=2, help="openssl ocsp -multi N")
    parser.add_argument("--revocations", type=int, default=50, help="per responder, while measured")
    parser.add_argument("--revoke-every", type=float, default=0.1, metavar="SECONDS")
    parser.add_argument(
        "--initially-revoked",
        type=float,
        default=0.05,
        metavar="FRACTION",
        help="of the certificates, revoked before anything is measured",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure every responder this many times, in turn"
    )
    choices = ["scepline", "openssl", "openssl-multi"]
    parser.add_argument("--only", nargs="*", choices=choices, default=choices)
    parser.add_argument("--cpu", action="store_true", help="CPU microseconds per answer")
    parser.add_argument(
        "--py-spy", type=Path, metavar="DIR", help="py-spy record scepline's serving processes"
    )
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = 3 * args.certificates
    for tool, package in (("wrk", "wrk"), ("openssl", "openssl")):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install {package}")
    if args.py_spy and shutil.which("py-spy") is None:
        raise SystemExit("py-spy is missing: uv run --with py-spy python bench/ocsp.py ...")
    summary(asyncio.run(run(args)), args)


if __name__ == "__main__":
    main()

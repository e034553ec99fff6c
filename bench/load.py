"""SCEP enrolment load generator: N concurrent clients, real HTTP, real crypto.

Requests are built before the clock starts (keys, CSRs, envelopes and
signatures are the client's cost, not the server's), then sent with
``--concurrency`` in flight over keep-alive connections (a bare HTTP/1.1
client: this process shares the CPUs with the servers). Each response is
checked to be a SUCCESS CertRep for its own transaction, its RA signature
verified, after the clock stops. Prints issued/s and latency percentiles.

    uv run python bench/load.py --url http://127.0.0.1:8080/scep --challenge secret \
        --requests 2000 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from scepline_devtools.scep_client import Requester, build_csr, self_signed_requester
from scepline_shared.scep import (
    ContentEncryption,
    Digest,
    MessageType,
    PkiStatus,
    build_request,
    parse_degenerate,
    read_pki_message,
)


@dataclass
class Prepared:
    transaction_id: str
    der: bytes


@dataclass
class Result:
    transaction_id: str
    seconds: float
    status: str


async def fetch_ra(http: httpx.AsyncClient, url: str) -> x509.Certificate:
    for _ in range(120):  # the server may still be starting
        try:
            response = await http.get(url, params={"operation": "GetCACert"})
            break
        except httpx.TransportError:
            await asyncio.sleep(0.5)
    response.raise_for_status()
    if response.headers.get("content-type", "").startswith("application/x-x509-ca-cert"):
        return x509.load_der_x509_certificate(response.content)  # one CA, no RA (micromdm)
    certificates, _ = parse_degenerate(response.content)
    for certificate in certificates:
        try:
            basic = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
            if not basic.ca:
                return certificate
        except x509.ExtensionNotFound:
            return certificate
    return certificates[0]


def prepare(
    count: int, keys: int, ra: x509.Certificate, challenge: str, encryption: ContentEncryption
) -> list[Prepared]:
    """Distinct transactions; keys are reused (RSA key generation is slow)."""
    requesters: list[Requester] = [
        self_signed_requester(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        for _ in range(keys)
    ]
    run = os.urandom(4).hex()
    prepared = []
    for index in range(count):
        requester = requesters[index % keys]
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bench-{run}-{index}")])
        csr = build_csr(requester.key, subject, challenge=challenge)
        transaction_id = f"bench-{run}-{index}"
        der = build_request(
            message_type=MessageType.PKCS_REQ,
            transaction_id=transaction_id,
            message_data=csr.public_bytes(Encoding.DER),
            signer_key=requester.key,
            signer_certificate=requester.certificate,
            recipient=ra,
            encryption=encryption,
            digest=Digest.SHA256,
        )
        prepared.append(Prepared(transaction_id, der))
    return prepared


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs and reads one answer at a time.

    The load generator shares the machine with the servers, so its own CPU per
    request is part of what is measured: a bare client costs a fraction of
    httpx's (Content-Length and chunked answers; anything else is an error).
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._head = (
            f"POST {parts.path or '/'}?operation=PKIOperation HTTP/1.1\r\n"
            f"Host: {parts.netloc}\r\n"
            "Content-Type: application/x-pki-message\r\n"
            "Content-Length: "
        ).encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if self._writer is None or self._reader is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        try:
            self._writer.write(self._head + str(len(body)).encode() + b"\r\n\r\n" + body)
            return await self._read(self._reader)
        except BaseException:
            self.close()
            raise

    async def _read(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            await reader.readuntil(b"\r\n")
            body = b"".join(chunks)
        else:
            raise ValueError("answer without Content-Length or chunked encoding")
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, body

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def send_all(
    url: str, prepared: list[Prepared], concurrency: int
) -> tuple[list[Result], float]:
    """Send everything, ``concurrency`` at a time; answers are checked after the
    clock stops (each one is still parsed and its RA signature verified)."""
    queue: asyncio.Queue[Prepared] = asyncio.Queue()
    for item in prepared:
        queue.put_nowait(item)
    answers: list[tuple[Prepared, float, int | str, bytes]] = []

    async def client() -> None:
        connection = Connection(url)
        try:
            while not queue.empty():
                item = queue.get_nowait()
                started = time.perf_counter()
                try:
                    status, body = await asyncio.wait_for(connection.post(item.der), 120)
                except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError) as error:
                    status, body = f"http-error:{type(error).__name__}", b""
                answers.append((item, time.perf_counter() - started, status, body))
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    results = [
        Result(item.transaction_id, seconds, _status(status, body, item.transaction_id))
        for item, seconds, status, body in answers
    ]
    return results, elapsed


def _status(status: int | str, body: bytes, transaction_id: str) -> str:
    if isinstance(status, str):
        return status
    if status != 200:
        return f"http-{status}"
    message = read_pki_message(body)  # verifies the RA's signature
    if message.transaction_id != transaction_id:
        return "wrong-transaction"
    return message.pki_status.name if message.pki_status is not None else "no-status"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def report(label: str, results: list[Result], elapsed: float) -> dict[str, float]:
    issued = [r for r in results if r.status == PkiStatus.SUCCESS.name]
    latencies = [r.seconds for r in issued] or [0.0]
    figures = {
        "requests": float(len(results)),
        "issued": float(len(issued)),
        "issued_per_s": len(issued) / elapsed if elapsed else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p95_ms": percentile(latencies, 0.95) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
    }
    others: dict[str, int] = {}
    for r in results:
        if r.status != PkiStatus.SUCCESS.name:
            others[r.status] = others.get(r.status, 0) + 1
    print(
        f"{label}: {int(figures['issued'])}/{len(results)} issued in {elapsed:.2f} s = "
        f"{figures['issued_per_s']:.1f} issued/s; latency p50 {figures['p50_ms']:.0f} ms, "
        f"p95 {figures['p95_ms']:.0f} ms, p99 {figures['p99_ms']:.0f} ms"
        + (f"; not issued: {others}" if others else ""),
        flush=True,
    )
    return figures


async def run(
    url: str,
    *,
    challenge: str,
    requests: int,
    concurrency: int,
    keys: int = 32,
    encryption: ContentEncryption = ContentEncryption.AES128_CBC,
    label: str = "scepline",
    warmup: int = 20,
    window: Callable[[], AbstractContextManager[object]] | None = None,
) -> dict[str, float]:
    """``window``, if given, is entered just before the measured requests are sent
    and left right after them (preparation and warm-up stay outside it)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        ra = await fetch_ra(http, url)
        prepared = await asyncio.to_thread(
            prepare, requests + warmup, keys, ra, challenge, encryption
        )
    if warmup:
        await send_all(url, prepared[:warmup], concurrency)
    with window() if window is not None else contextlib.nullcontext():
        results, elapsed = await send_all(url, prepared[warmup:], concurrency)
    return report(label, results, elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--challenge", required=True)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--des", action="store_true", help="single DES (micromdm's default)")
    args = parser.parse_args()
    encryption = ContentEncryption.DES_CBC if args.des else ContentEncryption.AES128_CBC
    asyncio.run(
        run(
            args.url,
            challenge=args.challenge,
            requests=args.requests,
            concurrency=args.concurrency,
            encryption=encryption,
        )
    )


if __name__ == "__main__":
    main()

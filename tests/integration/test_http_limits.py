"""A running ``scepline up`` stands up to oversized, slow and too many
connections: it answers 431, 408 or 503 and closes, and its memory stays under
a ceiling, instead of reading forever.

Raw sockets, because a well-behaved HTTP client cannot send what an attacker does.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from tests.fixtures.processes import ScepProcess, scepline_up
from tests.fixtures.scepline import data_dir_with_ca

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
KEEPALIVE_TIMEOUT = 1.0
MAX_CONNECTIONS = 100
# Time the server may take beyond a timeout to answer and close (a loaded CI machine).
SLACK = 1.5

# Peak resident memory a flood may add to the server process. Without limits the
# flood below (64 connections x 4 MiB of one header line) adds about 300 MiB.
MEMORY_CEILING = 32 * 2**20


class Server:
    def __init__(self, url: str, process: ScepProcess):
        self.port = int(url.split(":")[2].split("/")[0])
        self.pid = process.process.pid

    def _status(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {field} in /proc/{self.pid}/status")

    def rss(self) -> int:
        return self._status("VmRSS")

    def reset_peak_rss(self) -> None:
        # "5" resets the peak resident set size (VmHWM) to the current one.
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def peak_rss(self) -> int:
        return self._status("VmHWM")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, lab_ca_dir: Path) -> Iterator[Server]:
    data_dir = data_dir_with_ca(tmp_path_factory.mktemp("http-limits"), lab_ca_dir)
    with scepline_up(
        data_dir,
        static_challenge="unused",
        http_header_timeout_seconds=str(HEADER_TIMEOUT),
        http_body_timeout_seconds=str(BODY_TIMEOUT),
        http_keepalive_timeout_seconds=str(KEEPALIVE_TIMEOUT),
        http_max_connections=str(MAX_CONNECTIONS),
        log_level="WARNING",
        # The limits are per serving process: one, whose memory the flood measures.
        workers="1",
    ) as (url, process):
        yield Server(url, process)


class _Client(asyncio.Protocol):
    """Keeps what the server answered even when it then resets the connection
    (it does when it closes with our bytes unread), which asyncio's streams drop."""

    def __init__(self) -> None:
        self.answer = bytearray()
        self.closed = asyncio.get_running_loop().create_future()
        self.writable = asyncio.Event()
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        self.answer += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


async def talk(
    server: Server,
    first: bytes,
    then: Iterable[bytes] = (),
    *,
    every: float = 0.0,
    wait: float = 10.0,
) -> tuple[bytes, float]:
    """Send ``first``, then each of ``then`` (``every`` seconds apart) while the
    server keeps the connection open. Returns what the server answered before it
    closed the connection, and how many seconds after connecting it closed it."""
    started = time.monotonic()
    transport, client = await asyncio.get_running_loop().create_connection(
        _Client, "127.0.0.1", server.port
    )
    try:
        transport.write(first)
        for piece in then:
            await client.writable.wait()
            if client.closed.done():
                break
            transport.write(piece)
            if every:
                await asyncio.wait([client.closed], timeout=every)
        try:
            await asyncio.wait_for(asyncio.shield(client.closed), wait)
        except TimeoutError:
            raise AssertionError(f"the server still holds the connection after {wait} s") from None
    finally:
        transport.close()
    return bytes(client.answer), time.monotonic() - started


def statuses_of(answer: bytes) -> list[int]:
    """The status of each response in ``answer``."""
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]


def status_of(answer: bytes) -> int | None:
    """The status of the one response in ``answer``."""
    statuses = statuses_of(answer)
    assert len(statuses) <= 1, answer
    return statuses[0] if statuses else None


CACAPS = b"GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: scep\r\n"


def one_endless_line() -> Iterator[bytes]:
    """4 MiB without a line end."""
    return itertools.repeat(b"a" * 65536, 64)


def trickle() -> Iterator[bytes]:
    """A byte at a time, 100 at most."""
    return itertools.repeat(b"a", 100)


async def test_endless_header_lines_get_431_and_memory_stays_under_a_ceiling(server: Server):
    before = server.rss()
    server.reset_peak_rss()

    answers = await asyncio.gather(
        *(talk(server, CACAPS + b"X-Flood: ", one_endless_line()) for _ in range(64))
    )

    assert [status_of(answer) for answer, _ in answers] == [431] * 64
    assert server.peak_rss() - before < MEMORY_CEILING
    answer, _ = await talk(server, CACAPS + b"Connection: close\r\n\r\n")
    assert status_of(answer) == 200


async def test_too_many_header_fields_get_431(server: Server):
    fields = b"".join(b"X-Field-%d: x\r\n" % n for n in range(101))

    answer, _ = await talk(server, CACAPS + fields + b"\r\n")

    assert status_of(answer) == 431


async def test_a_head_of_100_fields_within_the_size_limit_is_served(server: Server):
    fields = b"".join(b"X-Field-%d: x\r\n" % n for n in range(98))  # and Host, Connection

    answer, _ = await talk(server, CACAPS + fields + b"Connection: close\r\n\r\n")

    assert status_of(answer) == 200


async def test_slow_and_silent_request_heads_get_408_and_are_closed(server: Server):
    slow = [talk(server, CACAPS + b"X-Slow: ", trickle(), every=0.1) for _ in range(40)]
    silent = [talk(server, b"") for _ in range(40)]

    answers = await asyncio.gather(*slow, *silent)

    assert [status_of(answer) for answer, _ in answers] == [408] * 80
    assert max(closed_after for _, closed_after in answers) < HEADER_TIMEOUT + SLACK


async def test_a_keep_alive_request_head_gets_the_header_timeout_too(server: Server):
    """The deadline starts again with each request on a kept-alive connection."""
    complete = CACAPS + b"\r\n"

    answer, closed_after = await talk(
        server, complete, [CACAPS + b"X-Slow: ", *trickle()], every=0.1
    )

    assert statuses_of(answer) == [200, 408]
    assert closed_after < HEADER_TIMEOUT + SLACK


async def test_a_slow_pkioperation_body_gets_408_and_is_closed(server: Server):
    head = (
        b"POST /scep?operation=PKIOperation HTTP/1.1\r\nHost: scep\r\n"
        b"Content-Type: application/x-pki-message\r\nContent-Length: 2000\r\n\r\n"
    )

    answer, closed_after = await talk(server, head, trickle(), every=0.1)

    assert status_of(answer) == 408
    assert closed_after < BODY_TIMEOUT + SLACK


async def test_a_body_nobody_reads_does_not_hold_the_connection_open(server: Server):
    """GetCACaps answers at once; the client then trickles the body it announced."""
    head = CACAPS + b"Content-Length: 1000000\r\n\r\n"

    answer, closed_after = await talk(server, head, trickle(), every=0.1)

    assert status_of(answer) == 200
    assert closed_after < BODY_TIMEOUT + SLACK


async def test_an_idle_kept_alive_connection_is_closed(server: Server):
    answer, closed_after = await talk(server, CACAPS + b"\r\n")

    assert status_of(answer) == 200
    assert closed_after < KEEPALIVE_TIMEOUT + SLACK


async def test_connections_beyond_the_cap_get_503(server: Server):
    held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(MAX_CONNECTIONS)]
    try:
        answer, _ = await talk(server, CACAPS + b"\r\n", wait=HEADER_TIMEOUT)
    finally:
        for _, writer in held:
            writer.close()

    assert status_of(answer) == 503
    await asyncio.sleep(0.2)  # the server sees the held connections go
    answer, _ = await talk(server, CACAPS + b"Connection: close\r\n\r\n")
    assert status_of(answer) == 200

"""The limits of every HTTP server (``scepline.http_server``).

``LimitedHttpToolsProtocol`` subclasses uvicorn's httptools protocol: the tests
below fail when a uvicorn release renames, stops calling or changes a method it
overrides (uvicorn is pinned below its next minor release for this reason). The
limits' effects on a running ``scepline up`` are tested in
``tests/integration/test_http_limits.py``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from pydantic import ValidationError
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from scepline.http_server import HttpLimits, LimitedHttpToolsProtocol
from scepline_shared.settings import Settings
from tests.fixtures.processes import free_port

HOOKS = [
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_header",
    "on_headers_complete",
    "on_response_complete",
    "send_400_response",
]

LIMITS = HttpLimits(
    max_header_bytes=4096,
    max_headers=20,
    header_timeout=5.0,
    body_timeout=0.3,
    keepalive_timeout=5.0,
    max_connections=3,
)


def test_the_defaults_are_safe():
    assert HttpLimits.from_settings(Settings()) == HttpLimits(
        max_header_bytes=16384,
        max_headers=100,
        header_timeout=10.0,
        body_timeout=30.0,
        keepalive_timeout=5.0,
        max_connections=1024,
    )


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("http_max_header_bytes", 100),
        ("http_max_header_bytes", 2 * 1024 * 1024),
        ("http_max_headers", 0),
        ("http_header_timeout_seconds", 0),
        ("http_header_timeout_seconds", 3600),
        ("http_body_timeout_seconds", 0),
        ("http_keepalive_timeout_seconds", 0),
        ("http_max_connections", 0),
    ],
)
def test_limits_out_of_range_are_refused_at_start(setting: str, value: float):
    with pytest.raises(ValidationError, match=setting):
        Settings(**{setting: value})


def test_every_hook_overrides_a_method_of_uvicorns_protocol_with_its_parameters():
    public = {
        name
        for name, value in vars(LimitedHttpToolsProtocol).items()
        if callable(value) and not name.startswith("_")
    }
    assert public == set(HOOKS)
    for name in HOOKS:
        theirs = inspect.signature(getattr(HttpToolsProtocol, name)).parameters
        ours = inspect.signature(getattr(LimitedHttpToolsProtocol, name)).parameters
        assert list(ours) == list(theirs), name


def _recording(name: str, calls: set[str]) -> Callable[..., Any]:
    def hook(self: LimitedHttpToolsProtocol, *args: Any) -> Any:
        calls.add(name)
        return getattr(LimitedHttpToolsProtocol, name)(self, *args)

    return hook


def _spy(calls: set[str]) -> type[LimitedHttpToolsProtocol]:
    """The protocol, recording each hook uvicorn calls."""
    return type(
        "SpyProtocol",
        (LimitedHttpToolsProtocol,),
        {name: _recording(name, calls) for name in HOOKS},
    )


@contextlib.asynccontextmanager
async def serving(protocol: type[LimitedHttpToolsProtocol]) -> AsyncIterator[int]:
    """An in-process uvicorn server on ``protocol``, answering GET /ok."""
    app = FastAPI()

    @app.get("/ok")
    async def ok() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            http=functools.partial(protocol, limits=LIMITS),  # type: ignore[arg-type]
            limit_concurrency=LIMITS.max_connections,
            log_level="error",
        )
    )
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def _closed_after(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    started = time.monotonic()
    answer = await asyncio.wait_for(reader.read(), 5)
    return answer, time.monotonic() - started


async def test_uvicorn_calls_every_hook_and_the_limits_hold():
    calls: set[str] = set()
    async with serving(_spy(calls)) as port:
        # Two requests on one connection; the second announces a body it never sends.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"ok\n")).startswith(b"HTTP/1.1 200 ")
        writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        answer, closed_after = await _closed_after(reader)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert closed_after < LIMITS.body_timeout + 1
        writer.close()

        # One header field too many: 431, not the 400 of a parser error.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        fields = b"".join(b"X-%d: x\r\n" % n for n in range(LIMITS.max_headers))
        writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        answer, _ = await _closed_after(reader)
        assert answer.startswith(b"HTTP/1.1 431 ")
        assert b"HTTP/1.1 400" not in answer
        writer.close()

        # A connection beyond the cap.
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer, _ = await _closed_after(reader)
        assert answer.startswith(b"HTTP/1.1 503 ")
        for _, held_writer in [*held, (reader, writer)]:
            held_writer.close()

    assert calls == set(HOOKS)


class _SendsRecorded:
    """The socket transport's side of the protocol: every write it is handed."""

    def __init__(self, transport: asyncio.Transport, sent: list[bytes]) -> None:
        self._transport = transport
        self._sent = sent

    def write(self, data: bytes) -> None:
        self._sent.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


async def test_a_response_head_and_body_leave_in_one_write_and_a_close_sends_them_first():
    sent: list[bytes] = []

    class Recorded(LimitedHttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(_SendsRecorded(transport, sent))  # type: ignore[arg-type]

    async with serving(Recorded) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"ok\n")
        # Connection: close makes uvicorn close right after writing the body.
        writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer, _ = await _closed_after(reader)
        writer.close()

    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nok\n")
    assert len(sent) == 2  # one write per response, head and body together
    assert all(write.startswith(b"HTTP/1.1 200 ") and write.endswith(b"ok\n") for write in sent)

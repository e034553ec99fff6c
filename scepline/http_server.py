"""Every HTTP server a scepline process starts (the SCEP port, the health port),
with limits against oversized, slow and too many connections.

uvicorn's httptools protocol reads a request head with no size limit and no
deadline: one endless header line grows the process without bound, and a
client that sends nothing, or a byte now and then, holds its connection
forever. :class:`LimitedHttpToolsProtocol` adds what it lacks:

- a request head over ``max_header_bytes`` or ``max_headers`` fields: 431;
- a head not complete ``header_timeout`` seconds after the connection opened or
  the request's first byte arrived: 408;
- a body the app answered without reading (413, a GET with a body) may take
  ``body_timeout`` seconds more to arrive, then the connection closes; a body
  the app reads has its own deadline there (ingress's ``_read_message``);
- connections beyond ``max_connections``: 503 at once.

uvicorn's own ``limit_concurrency`` (503 for requests at the cap) and
``timeout_keep_alive`` (idle connections between requests) do the rest. After
each of these answers the connection is closed: at once for the client's side,
a moment later for reading (see ``_refuse``).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import http
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from scepline_shared.metrics import HTTP_REFUSED
from scepline_shared.settings import Settings

from .errors import CommandError

__all__ = ["HttpLimits", "LimitedHttpToolsProtocol", "Listener", "bind_port", "serve_http"]

# How long a refused connection's input is still read (and dropped): see _refuse.
LINGER_SECONDS = 2.0


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int
    max_headers: int
    header_timeout: float
    body_timeout: float
    keepalive_timeout: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_header_bytes=settings.http_max_header_bytes,
            max_headers=settings.http_max_headers,
            header_timeout=settings.http_header_timeout_seconds,
            body_timeout=settings.http_body_timeout_seconds,
            keepalive_timeout=settings.http_keepalive_timeout_seconds,
            max_connections=settings.http_max_connections,
        )


class _Refused(Exception):
    """Raised in a parser callback to stop httptools once the request is refused."""


def _answer(status: int, reason: str) -> bytes:
    body = f"{reason}\n".encode()
    return (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
        "content-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode() + body


class _CoalescedWrites:
    """A transport whose writes within one turn of the event loop leave in one
    send: uvicorn writes a response's head and its body separately, two system
    calls (and two TCP segments) for answers of a few hundred bytes, the larger
    part of what a cached OCSP answer costs (docs/performance.md). Everything
    but writing goes to the transport unchanged."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(bytes(data))

    def writelines(self, lines: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()  # what was written goes out before the connection closes
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of :class:`HttpLimits`.

    Only the head of a request costs a check per read; once it is complete, the
    body and the response take uvicorn's path unchanged.
    """

    def __init__(self, *args: Any, limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        # Bytes read of the current request head; None once it is complete (a
        # body or nothing follows). A head that begins in the middle of a read
        # (pipelining) is counted from the next read on: at most one read more.
        self._head_bytes: int | None = 0
        self._head_fields = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CoalescedWrites(transport))  # type: ignore[arg-type]
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "too many connections")
        else:
            self._arm(self.limits.header_timeout, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered already; what follows is dropped unread
        if self._head_bytes is None:
            super().data_received(data)
            return
        self._head_bytes += len(data)
        super().data_received(data)
        if self._head_bytes is not None and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(431, "request header too large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_fields = 0
        if self._head_bytes is None:  # a request after the first on this connection
            self._head_bytes = 0
            self._arm(self.limits.header_timeout, self._head_too_slow)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += 1
        if self._head_fields > self.limits.max_headers:
            self._refuse(431, "too many header fields")
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle
        if cycle.response_complete and cycle.more_body and not self.transport.is_closing():
            # Answered before its body arrived: uvicorn would read and drop the
            # rest for as long as the client trickles it.
            self._arm(self.limits.body_timeout, self.transport.close)

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # a refusal raises _Refused to stop the parser: no 400 then
            super().send_400_response(msg)

    def _head_too_slow(self) -> None:
        self._refuse(408, "request header not received in time")

    def _refuse(self, status: int, reason: str) -> None:
        """Answer ``status`` and end the connection."""
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        HTTP_REFUSED.labels(str(status)).inc()
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request broke a limit while the previous one's response
            # is being written: no answer can follow it.
            self.transport.close()
            return
        self.transport.write(_answer(status, reason))
        if not self.transport.can_write_eof():  # TLS
            self.transport.close()
            return
        # Half-close, and drop what the client still sends for a moment: closing
        # with its bytes unread would reset the connection, and a client still
        # sending would lose the answer with it.
        self.transport.write_eof()
        self._arm(LINGER_SECONDS, self.transport.close)

    def _arm(self, seconds: float, then: Callable[[], object]) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, then)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


def bind_port(host: str, port: int, *, settings: str) -> socket.socket:
    """A socket bound to ``host``:``port`` now, listening only once served.

    Processes bind their ports before any other start-up work, so a busy port
    (or a bad address) stops them at once with one line naming ``settings``,
    the variables that chose it, and never after a "serving" banner. Until
    uvicorn serves it, connections to the bound port are refused, not queued.
    """
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        bound = socket.socket(family, kind, protocol)
    except OSError as error:
        raise CommandError(f"cannot listen on {host}:{port} ({settings}): {error}") from None
    try:
        bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        bound.bind(address)
    except OSError as error:
        bound.close()
        reason = error.strerror or str(error)
        raise CommandError(f"cannot listen on {host}:{port} ({settings}): {reason}") from None
    return bound


@dataclass(frozen=True)
class Listener:
    """An app and the socket it accepts on (from bind_port; the serving
    processes of ``scepline up`` share one)."""

    app: FastAPI
    socket: socket.socket


async def serve_http(settings: Settings, *listeners: Listener) -> None:
    """Serve each app on its address with the limits of ``settings`` until
    SIGINT/SIGTERM, or until one server stops (then the others stop too)."""
    limits = HttpLimits.from_settings(settings)
    # What start-up made (modules, settings, apps, connections) lives as long as
    # the process: out of the collector's generations, a full collection walks
    # only what requests made, and stops the loop for less (the latency tail).
    # No gc.collect() first: on a freshly started process it costs ~0.1 s and
    # finds little; what it would have freed stays, once.
    gc.freeze()
    servers = [
        uvicorn.Server(
            uvicorn.Config(
                listener.app,
                host=listener.socket.getsockname()[0],
                port=listener.socket.getsockname()[1],
                http=functools.partial(LimitedHttpToolsProtocol, limits=limits),  # type: ignore[arg-type]
                limit_concurrency=limits.max_connections,
                timeout_keep_alive=limits.keepalive_timeout,  # type: ignore[arg-type]
                access_log=False,
                log_level="warning",
            )
        )
        for listener in listeners
    ]
    running = [
        asyncio.create_task(server.serve(sockets=[listener.socket]))
        for server, listener in zip(servers, listeners, strict=True)
    ]
    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
    for server in servers:
        server.should_exit = True
    await asyncio.gather(*running)

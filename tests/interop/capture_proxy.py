"""A recording HTTP reverse proxy for capturing real SCEP clients' wire traffic.

Put :class:`CaptureProxy` between a SCEP client and a SCEP server to record exactly what
the client sends. Every request is forwarded unchanged (method, raw path and query string,
headers apart from hop-by-hop ones, body) and the server's answer is relayed back
unchanged. Each ``PKIOperation`` request's pkiMessage is saved as DER, which gives real
client messages to use as test data::

    with CaptureProxy("http://127.0.0.1:2016/scep", out_dir) as proxy:
        enrol_scepclient(proxy.url, workdir, challenge="secret", cn="dev1")
    proxy.exchanges  # what went over the wire, in order

File naming: ``<seq>-<method>-pkioperation.der``. ``<seq>`` is the zero-padded,
1-based number of the HTTP request among all requests through this proxy, so the numbers
of saved files have gaps where GetCACaps/GetCACert requests were. ``<method>`` is ``get``
or ``post``. With ``save_responses=True`` the server's answer is saved too, as
``<seq>-<method>-pkioperation-response.der``.

Decoding the GET ``message`` parameter follows the clients' quirks
(``docs/specs/scep-clients.md``, "Devices and other clients"). It is taken from the *raw*
query string and percent-decoded without turning ``+`` into a space. Whitespace (the
``%0A`` line breaks sscep/strongSwan add) is removed, and the rest is base64-decoded, with
padding added if it is missing.

Only the standard library is used. The proxy listens on a free loopback port. For a manual
recording session, run ``python -m tests.interop.capture_proxy TARGET_URL OUT_DIR``.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

__all__ = ["CaptureProxy", "Exchange", "decode_get_message", "parse_raw_query"]

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


@dataclass(frozen=True)
class Exchange:
    """One HTTP request relayed by the proxy, with the server's answer."""

    seq: int
    method: str
    raw_path: str  # path plus "?query" exactly as the client sent it
    operation: str | None  # value of the "operation" query parameter
    message: str | None  # raw (still percent-encoded) "message" query value, if any
    request_headers: tuple[tuple[str, str], ...]
    request_body: bytes
    status: int  # 502 if the upstream server could not be reached
    response_headers: tuple[tuple[str, str], ...]
    response_body: bytes
    saved: Path | None  # DER file written for a PKIOperation request, if any
    decode_error: str | None  # why a PKIOperation message could not be decoded, if so

    @property
    def user_agent(self) -> str | None:
        """The client's User-Agent header, if any."""
        for name, value in self.request_headers:
            if name.lower() == "user-agent":
                return value
        return None

    @property
    def content_type(self) -> str | None:
        """The Content-Type of the server's response, if any."""
        for name, value in self.response_headers:
            if name.lower() == "content-type":
                return value
        return None


def parse_raw_query(raw_query: str) -> list[tuple[str, str]]:
    """Split a raw query string into ``(name, raw_value)`` pairs.

    Names are percent-decoded (without treating ``+`` as a space). Values are left
    exactly as sent so that callers can apply SCEP-specific decoding.
    """
    pairs: list[tuple[str, str]] = []
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((urllib.parse.unquote(name), value))
    return pairs


def decode_get_message(raw_value: str) -> bytes:
    """Decode a GET ``message`` query value as sent by a SCEP client.

    Percent-decodes without turning ``+`` into a space, strips all whitespace (including
    decoded ``%0A`` line breaks), adds missing base64 padding and base64-decodes.

    Raises:
        ValueError: if the value is not valid base64 after that normalisation.
    """
    text = urllib.parse.unquote(raw_value)
    text = "".join(text.split())
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"message parameter is not base64: {exc}") from exc


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, proxy: CaptureProxy) -> None:
        super().__init__((proxy.host, 0), _Handler)
        self.proxy = proxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        """Keep the proxy quiet; the exchanges are recorded instead."""

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Trailer section, ended by an empty line.
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _relay(self) -> None:
        body = self._read_body()
        self.server.proxy._relay(self, body)

    do_GET = _relay
    do_POST = _relay
    do_HEAD = _relay
    do_PUT = _relay
    do_DELETE = _relay
    do_OPTIONS = _relay
    do_PATCH = _relay


class CaptureProxy:
    """A loopback HTTP reverse proxy that records SCEP traffic.

    Args:
        target_url: URL of the real SCEP server, e.g. ``http://127.0.0.1:2016/scep``.
            Only plain ``http`` is supported.
        out_dir: directory for the captured ``*-pkioperation.der`` files (created).
        save_responses: also save each PKIOperation response body.
        host: loopback address to listen on.
        upstream_timeout: seconds to wait for the upstream server per request.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. :attr:`url`
    is the target URL with the proxy's address, so clients can use it as-is.
    """

    def __init__(
        self,
        target_url: str,
        out_dir: Path,
        *,
        save_responses: bool = False,
        host: str = "127.0.0.1",
        upstream_timeout: float = 60.0,
    ) -> None:
        parts = urllib.parse.urlsplit(target_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"only http:// target URLs are supported, got {target_url!r}")
        self.target_url = target_url
        self._target = parts
        self.out_dir = Path(out_dir)
        self.save_responses = save_responses
        self.host = host
        self.upstream_timeout = upstream_timeout
        self._lock = threading.Lock()
        self._seq = 0
        self._exchanges: list[Exchange] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> CaptureProxy:
        """Bind a free loopback port and start relaying in a background thread."""
        if self._server is not None:
            raise RuntimeError("proxy already started")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="scep-capture-proxy",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop relaying and close the listening socket."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> CaptureProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- results -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The loopback port the proxy listens on."""
        if self._server is None:
            raise RuntimeError("proxy not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The target URL rewritten to point at the proxy (same path and query)."""
        netloc = f"{self.host}:{self.port}"
        return urllib.parse.urlunsplit(self._target._replace(netloc=netloc))

    @property
    def exchanges(self) -> list[Exchange]:
        """All relayed requests so far, in arrival order."""
        with self._lock:
            return sorted(self._exchanges, key=lambda e: e.seq)

    @property
    def captured(self) -> list[Path]:
        """The DER files written for PKIOperation requests so far, in order."""
        return [e.saved for e in self.exchanges if e.saved is not None]

    # -- relaying ----------------------------------------------------------------------

    def _next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def _forward(
        self, method: str, raw_path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        target = self._target
        conn = http.client.HTTPConnection(
            target.hostname or "127.0.0.1", target.port or 80, timeout=self.upstream_timeout
        )
        try:
            conn.putrequest(method, raw_path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", target.netloc)
            for name, value in headers:
                conn.putheader(name, value)
            if body or method in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            resp_body = resp.read()
            return resp.status, resp.reason, resp.getheaders(), resp_body
        finally:
            conn.close()

    def _relay(self, handler: _Handler, body: bytes) -> None:
        seq = self._next_seq()
        method = handler.command
        raw_path = handler.path
        req_headers = [(k, v) for k, v in handler.headers.items()]
        fwd_headers = [
            (k, v)
            for k, v in req_headers
            if k.lower() not in _HOP_BY_HOP and k.lower() not in ("host", "content-length")
        ]

        query = urllib.parse.urlsplit(raw_path).query
        params = parse_raw_query(query)
        operation = next((v for k, v in params if k == "operation"), None)
        operation = urllib.parse.unquote(operation) if operation is not None else None
        message = next((v for k, v in params if k == "message"), None)

        saved: Path | None = None
        decode_error: str | None = None
        is_pkiop = operation is not None and operation.lower() == "pkioperation"
        if is_pkiop:
            der: bytes | None = None
            if method == "POST":
                der = body
            elif message is not None:
                try:
                    der = decode_get_message(message)
                except ValueError as exc:
                    decode_error = str(exc)
            else:
                decode_error = "PKIOperation request without a message"
            if der is not None:
                saved = self.out_dir / f"{seq:04d}-{method.lower()}-pkioperation.der"
                saved.write_bytes(der)

        try:
            status, reason, resp_headers, resp_body = self._forward(
                method, raw_path, fwd_headers, body
            )
        except OSError as exc:
            status, reason = 502, "Bad Gateway"
            resp_body = f"capture proxy: upstream error: {exc}\n".encode()
            resp_headers = [("Content-Type", "text/plain")]

        if is_pkiop and self.save_responses:
            resp_file = self.out_dir / f"{seq:04d}-{method.lower()}-pkioperation-response.der"
            resp_file.write_bytes(resp_body)

        with self._lock:
            self._exchanges.append(
                Exchange(
                    seq=seq,
                    method=method,
                    raw_path=raw_path,
                    operation=operation,
                    message=message,
                    request_headers=tuple(req_headers),
                    request_body=body,
                    status=status,
                    response_headers=tuple(resp_headers),
                    response_body=resp_body,
                    saved=saved,
                    decode_error=decode_error,
                )
            )

        # send_response_only: relay the upstream's own Date/Server headers, add none.
        handler.send_response_only(status, reason)
        for name, value in resp_headers:
            if name.lower() in _HOP_BY_HOP or name.lower() == "content-length":
                continue
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(resp_body)))
        if handler.close_connection:
            handler.send_header("Connection", "close")
        handler.end_headers()
        if method != "HEAD":
            handler.wfile.write(resp_body)


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.interop.capture_proxy TARGET_URL OUT_DIR``: record until Ctrl-C."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target_url", help="the real SCEP server, e.g. http://127.0.0.1:2016/scep")
    parser.add_argument("out_dir", type=Path, help="where to write *-pkioperation.der")
    parser.add_argument("--save-responses", action="store_true", help="also save the answers")
    args = parser.parse_args(argv)
    with CaptureProxy(args.target_url, args.out_dir, save_responses=args.save_responses) as proxy:
        print(f"point the client at {proxy.url}", flush=True)
        seen = 0
        try:
            while True:
                time.sleep(0.2)
                for e in proxy.exchanges[seen:]:
                    saved = f" -> {e.saved.name}" if e.saved else ""
                    print(
                        f"{e.seq:04d} {e.method} {e.raw_path[:100]} {e.status}{saved}", flush=True
                    )
                seen = len(proxy.exchanges)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Running the simulator: ``serve`` in the foreground, ``RunningSimulator`` in a thread.

Both bind a loopback socket first (so port 0 works and the URL is known before
the first request), then hand it to uvicorn with ``SimulatorProtocol``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from .app import create_simulator
from .faults import TRANSPORT_SCOPE_KEY
from .state import SimulatorState
from .tls import ensure_tls_files

__all__ = ["RunningSimulator", "SimulatorProtocol", "serve"]


class SimulatorProtocol(H11Protocol):
    """uvicorn's h11 protocol that also hands the app its connection's transport.

    uvicorn keeps the transport to itself; the ``reset`` fault needs it to abort
    the TCP connection with an RST (see ``faults``).
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        inner = self.app

        async def with_transport(scope: Scope, receive: Receive, send: Send) -> None:
            await inner({**scope, TRANSPORT_SCOPE_KEY: transport}, receive, send)

        self.app = with_transport


def _loopback_socket(host: str, port: int) -> socket.socket:
    address = ipaddress.ip_address(socket.gethostbyname(host) if host == "localhost" else host)
    if not address.is_loopback:
        # The /_sim admin API is unauthenticated: never expose it beyond this machine.
        raise ValueError(f"the simulator listens on loopback only, not {host}")
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((str(address), port))
    return sock


def _config(
    state: SimulatorState, *, tls: bool, data_dir: Path, **options: Any
) -> tuple[uvicorn.Config, Path | None]:
    ssl: dict[str, Any] = {}
    ca_bundle = None
    if tls:
        files = ensure_tls_files(data_dir)
        ssl = {"ssl_certfile": str(files.certificate), "ssl_keyfile": str(files.private_key)}
        ca_bundle = files.ca_bundle
    config = uvicorn.Config(
        create_simulator(state),
        http=SimulatorProtocol,
        lifespan="off",
        timeout_graceful_shutdown=1,  # hung requests (the hang fault) must not block exit
        **ssl,
        **options,
    )
    return config, ca_bundle


def _url(sock: socket.socket, tls: bool) -> str:
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{host}:{port}"


def serve(
    host: str = "127.0.0.1",
    port: int = 8443,
    *,
    tls: bool = True,
    data_dir: Path,
    state: SimulatorState | None = None,
) -> None:
    """Run the simulator in the foreground until interrupted.

    Writes ``sim.json`` (URLs, tenant, the app's credentials, CA bundle path) to
    `data_dir` so clients in other processes can configure themselves.
    """
    state = state or SimulatorState()
    sock = _loopback_socket(host, port)
    config, ca_bundle = _config(state, tls=tls, data_dir=data_dir)
    base = _url(sock, tls)
    app = state.default_app
    info = {
        "base_url": base,
        "authority": f"{base}/{state.tenant_id}",
        "graph_url": base,
        "tenant_id": state.tenant_id,
        "tenant_domain": state.tenant_domain,
        "client_id": app.client_id,
        "client_secret": app.client_secret,
        "ca_bundle": str(ca_bundle) if ca_bundle else None,
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "sim.json").write_text(json.dumps(info, indent=2) + "\n")
    (data_dir / "sim.json").chmod(0o600)
    print(f"Intune simulator at {base} (details in {data_dir / 'sim.json'})", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


class RunningSimulator:
    """The simulator in a background thread, for tests: a context manager."""

    def __init__(
        self,
        state: SimulatorState | None = None,
        *,
        data_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = True,
    ) -> None:
        self.state = state or SimulatorState()
        self._socket = _loopback_socket(host, port)
        self.base_url = _url(self._socket, tls)
        config, self.ca_bundle = _config(
            self.state, tls=tls, data_dir=data_dir, log_config=None, access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name="intune-sim",
            daemon=True,
        )

    def start(self) -> RunningSimulator:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Intune simulator did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> RunningSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

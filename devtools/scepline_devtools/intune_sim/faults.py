"""ASGI middleware that names each call, records it, and injects faults.

It wraps the routers rather than living in them so a fault replaces the whole
exchange (no handler side effects) and so even dropped connections are recorded.

Connection reset: with ``server.SimulatorProtocol`` (what ``serve`` and the test
fixture use) the ASGI scope carries the connection's asyncio transport; the fault
sets SO_LINGER to zero and aborts it, so the kernel sends a TCP RST instead of a
FIN, with no HTTP response (strace: setsockopt(SO_LINGER {1, 0}) then close()).
Plain-HTTP clients see ECONNRESET; over TLS, OpenSSL 3 reports it as an
unexpected EOF (httpx RemoteProtocolError "Server disconnected without sending a
response", requests RemoteDisconnected). Under any other server the middleware
starts a response and then raises, and the server drops the connection.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ENTRA_ROUTES, GRAPH_ROUTES, aad_body, fe_body, graph_body
from .models import FaultKind, FaultSpec, RecordedCall, Route
from .scep_actions import action_result
from .state import PKI_SERVICE_PATH, SCEP_SERVICE_PATH, SimulatorState

__all__ = ["TRANSPORT_SCOPE_KEY", "SimulatorMiddleware", "classify"]

TRANSPORT_SCOPE_KEY = "scepline_devtools.intune_sim.transport"

_ROUTES = [
    (re.compile(r"^/common/discovery/instance$"), Route.INSTANCE_DISCOVERY),
    (re.compile(r"^/[^/]+/v2\.0/\.well-known/openid-configuration$"), Route.OPENID_CONFIGURATION),
    (re.compile(r"^/[^/]+/discovery/v2\.0/keys$"), Route.JWKS),
    (re.compile(r"^/[^/]+/oauth2/v2\.0/token$"), Route.TOKEN),
    (re.compile(r"^/v1\.0/servicePrincipals/[^/]+/endpoints$"), Route.GRAPH_ENDPOINTS),
]
_ACTIONS = re.compile(
    rf"^/[^/]+/(?:{re.escape(SCEP_SERVICE_PATH)}/ScepActions"
    rf"|{re.escape(PKI_SERVICE_PATH)}/CertificateAuthorityRequests)/(?P<action>[^/]+)$"
)
_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)


def classify(path: str) -> Route | None:
    for pattern, route in _ROUTES:
        if pattern.match(path):
            return route
    match = _ACTIONS.match(path)
    if match and match["action"] in Route.__members__.values():
        return Route(match["action"])
    return None


def _decode(raw: bytes, form: bool) -> Any:
    text = raw.decode("utf-8", "replace")
    if not text:
        return None
    if form:
        return dict(parse_qsl(text, keep_blank_values=True))
    try:
        return json.loads(text)
    except ValueError:
        return text


def _fault_response(
    fault: FaultSpec, route: Route, scope: Scope, client_request_id: str, state: SimulatorState
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body a fault answers with, in the route's own error shape."""
    kind, retry = fault.kind, fault.retry_after
    if kind is FaultKind.BAD_GATEWAY_HTML:
        return 502, {"content-type": "text/html"}, _HTML_502
    if kind is FaultKind.BAD_GATEWAY_EMPTY:
        return 502, {}, b""
    if kind is FaultKind.CODE:
        shard = scope["path"].split("/")[1]
        body = action_result(state, _base(scope), shard, fault.code, "Injected by the simulator.")
        return 200, {}, json.dumps(body).encode()
    if kind is FaultKind.FALSE_VALUE:
        return 200, {}, b'{"value":false}'
    status, headers = {
        FaultKind.THROTTLE: (429, {"Retry-After": str(retry)}),
        FaultKind.INTERNAL_ERROR: (500, {}),
        FaultKind.UNAVAILABLE: (503, {"Retry-After": str(retry)}),
        FaultKind.NOT_FOUND: (404, {}),
    }[kind]
    texts = {
        429: ("TooManyRequests", "temporarily_unavailable", 50196, "Too many requests."),
        500: ("InternalError", "server_error", 90033, "An internal server error has occurred"),
        503: ("ServiceUnavailable", "temporarily_unavailable", 90033, "Service unavailable"),
        404: ("NotFound", "invalid_request", 90002, "The requested resource was not found"),
    }
    fe_code, aad_error, aadsts, message = texts[status]
    if route in ENTRA_ROUTES:
        body = aad_body(aad_error, aadsts, message, client_request_id)
    elif route in GRAPH_ROUTES:
        code = "Request_ResourceNotFound" if status == 404 else fe_code
        body = graph_body(code, message, client_request_id)
    else:
        url = _base(scope) + scope["path"]
        body = fe_body(fe_code, message, client_request_id, url, retry if status != 500 else None)
    return status, {"content-type": "application/json", **headers}, json.dumps(body).encode()


def _base(scope: Scope) -> str:
    host = dict(scope["headers"]).get(b"host", b"localhost").decode("latin-1")
    return f"{scope.get('scheme', 'http')}://{host}"


async def _drop_connection(scope: Scope, send: Send) -> None:
    transport = scope.get(TRANSPORT_SCOPE_KEY)
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:  # linger 0: close() sends RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        await asyncio.sleep(0.05)  # let connection_lost mark the request as disconnected
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise ConnectionAbortedError("simulated connection reset")


class SimulatorMiddleware:
    def __init__(self, app: ASGIApp, state: SimulatorState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = classify(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:  # small bodies: buffer them for the record and for replay
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        status: int | None = None
        response_chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                response_chunks.append(message.get("body", b""))
            await send(message)

        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        fault = self.state.take_fault(route)

        def record() -> None:
            self.state.record(
                RecordedCall(
                    route=route,
                    method=scope["method"],
                    path=scope["path"],
                    query=scope.get("query_string", b"").decode("latin-1"),
                    headers=headers,
                    body=_decode(body, form=route is Route.TOKEN),
                    status=status,
                    response=_decode(b"".join(response_chunks), form=False),
                    fault=fault.kind if fault else None,
                    at=self.state.clock.now(),
                )
            )

        if fault is not None and fault.kind in (FaultKind.HANG, FaultKind.RESET):
            record()  # now: the client may give up long before the connection drops
            await asyncio.sleep(fault.seconds if fault.kind is FaultKind.HANG else 0)
            await _drop_connection(scope, send)
            return
        try:
            await self._dispatch(fault, route, scope, replay, capture, headers)
        finally:
            record()

    async def _dispatch(
        self,
        fault: FaultSpec | None,
        route: Route,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str],
    ) -> None:
        if fault is not None and fault.kind is FaultKind.LATENCY:
            await asyncio.sleep(fault.seconds)
        if fault is None or fault.kind is FaultKind.LATENCY:
            await self.app(scope, receive, send)
            return
        client_request_id = headers.get("client-request-id", "")
        status, extra, payload = _fault_response(fault, route, scope, client_request_id, self.state)
        response_headers = [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        response_headers += [
            (b"content-length", str(len(payload)).encode()),
            (b"client-request-id", client_request_id.encode()),
        ]
        if status == 200:
            response_headers.append((b"content-type", b"application/json"))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": payload})

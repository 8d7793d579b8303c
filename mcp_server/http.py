"""The daemon's one HTTP port: MCP at ``/mcp``, ``/metrics``, ``/healthz`` and ``/readyz``.

Built once, the way starlette builds its middleware stack: the MCP streamable-HTTP app
(with Host-header protection naming the hosts clients may use) carries the three plain
routes, and a guard in front of ``/mcp`` checks the optional bearer token (probes and
Prometheus scrapes need no secret) and bounds each request (:mod:`mcp_server.http_limits`):
its body is read whole, up to a size, and checked for depth, width and string size before
anything parses it, and only a few requests are handled at once. ``/metrics`` renders the
in-memory registry and never touches the disk.
"""

from __future__ import annotations

import asyncio
import hmac
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_server.http_limits import (
    INVALID_REQUEST,
    HttpLimits,
    body_problem,
    bounded_h11,
    connection_limit,
)
from store.errors import XidwatchError

__all__ = [
    "HttpLimits",
    "HttpService",
    "Readiness",
    "allowed_hosts",
    "build_http_app",
    "read_token",
]

log = structlog.get_logger("mcp_server.http")

# Readiness: part name -> None when fine, else what is wrong.
Readiness = Callable[[], Mapping[str, str | None]]

MAX_TOKEN_BYTES = 4096
DEFAULT_LIMITS = HttpLimits()


def read_token(path: Path, *, flag: str = "--auth-token-file") -> str:
    """The bearer token from ``path`` (stripped); a clear error naming ``flag`` if unreadable
    or empty."""
    try:
        raw = path.read_bytes()[: MAX_TOKEN_BYTES + 1]
    except OSError as e:
        raise XidwatchError(f"cannot read {flag} {path}: {e.strerror}") from e
    token = raw.decode("utf-8", "replace").strip()
    if not token or len(raw) > MAX_TOKEN_BYTES:
        raise XidwatchError(f"{flag} {path} must hold one token of 1..4096 bytes")
    return token


def allowed_hosts(listen_host: str, extra: Sequence[str] = ()) -> list[str]:
    """Host headers MCP accepts: loopback, this host's names, the listen address, and ``extra``.

    In a cluster add the Service name (``xidwatch.gpu-monitoring.svc``) and the pod IP;
    each is allowed with any port.
    """
    names = {"127.0.0.1", "localhost", "[::1]", socket.gethostname(), *extra}
    if listen_host not in ("0.0.0.0", "::", ""):
        names.add(listen_host)
    return sorted({h for n in names for h in (n, f"{n}:*")})


def build_http_app(
    server: MCPServer,
    *,
    readiness: Readiness,
    hosts: Sequence[str],
    token: str | None = None,
    registry: CollectorRegistry = REGISTRY,
    limits: HttpLimits = DEFAULT_LIMITS,
) -> ASGIApp:
    """The ASGI app for the daemon's port (see the module docstring)."""

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        parts = dict(readiness())
        failing = {k: v for k, v in parts.items() if v is not None}
        body = {"ready": not failing, "parts": {k: v or "ok" for k, v in parts.items()}}
        return JSONResponse(body, status_code=503 if failing else 200)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=True,
        json_response=True,
        transport_security=TransportSecuritySettings(
            enable_dns_rebinding_protection=True, allowed_hosts=list(hosts)
        ),
    )
    app.router.routes[:0] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    return _McpGuard(app, token, limits)


def _rpc_error(status: int, code: int, message: str, **headers: str) -> Response:
    """A JSON-RPC error answering a message that could not be read (so its id is null)."""
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers or None)


class _McpGuard:
    """In front of ``/mcp``: the bearer token (constant-time compare), POST only, and limits.

    The server is stateless and answers in JSON, so it never pushes: a GET would only open
    an event stream that stays idle and holds a connection, so it is refused. A POST's body
    is read here, refused past the limits, and handed on as one message.
    """

    def __init__(self, app: ASGIApp, token: str | None, limits: HttpLimits) -> None:
        self.app = app
        self._token = token.encode() if token else None
        self._limits = limits
        self._slots = asyncio.Semaphore(limits.max_mcp_in_flight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/mcp"):
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = await self._read_body(scope, receive, send)
        if body is None:
            return
        try:
            async with asyncio.timeout(self._limits.mcp_queue_s):
                await self._slots.acquire()
        except TimeoutError:
            busy = _rpc_error(503, -32000, "server busy: retry shortly", **{"Retry-After": "1"})
            await busy(scope, receive, send)
            return
        try:  # checked, parsed and answered only a few at once: CPU and memory stay bounded
            problem = body_problem(body, self._limits)
            if problem is not None:
                await _rpc_error(400, *problem)(scope, receive, send)
                return
            await self.app(scope, _replay(body, receive), send)
        finally:
            self._slots.release()

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None once answered (413) or the client went away."""
        limit = self._limits.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if not (declared.isdigit() and (len(declared) > 15 or int(declared) > limit)):
            chunks: list[bytes] = []
            received = 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return None  # the client went away
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    break
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        too_big = _rpc_error(413, INVALID_REQUEST, f"request body over {limit} bytes")
        await too_big(scope, receive, send)
        return None

    def _refusal(self, scope: Scope) -> Response | None:
        if self._token is not None:
            given = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, credentials = given.strip().partition(b" ")
            # RFC 9110: the scheme is case-insensitive; the token compared in constant time.
            matches = hmac.compare_digest(credentials.strip(), self._token)
            if scheme.lower() != b"bearer" or not matches:
                return JSONResponse(
                    {"error": "missing or wrong bearer token for /mcp"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        if scope["method"] not in ("POST", "DELETE"):
            return JSONResponse(
                {"error": "this MCP endpoint is stateless: send requests with POST"},
                status_code=405,
                headers={"Allow": "POST"},
            )
        return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the app behind the guard: the body read, then the client's own."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


@dataclass
class HttpService:
    """uvicorn serving ``app`` inside the daemon's event loop; ``stop()`` ends it gracefully."""

    app: ASGIApp
    host: str
    port: int
    name: str = "http"
    limits: HttpLimits = DEFAULT_LIMITS

    def __post_init__(self) -> None:
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            http=bounded_h11(self.limits),
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
            timeout_keep_alive=self.limits.keep_alive_s,
            # A backstop on requests being answered; connections are capped (with eviction
            # of stalled ones) by the protocol at accept time.
            limit_concurrency=2 * connection_limit(self.limits),
            h11_max_incomplete_event_size=self.limits.max_header_bytes,
        )
        self._server = uvicorn.Server(config)

    @property
    def bound_port(self) -> int | None:
        """The port actually bound (``port`` 0 picks a free one), once started."""
        for server in getattr(self._server, "servers", []):
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return None

    async def run(self) -> None:
        announce = asyncio.create_task(self._announce())
        try:
            await self._server.serve()
            if not self._server.started:
                raise SystemExit("did not start")
        except (OSError, SystemExit) as e:  # uvicorn exits when it cannot bind
            raise XidwatchError(
                f"cannot serve HTTP on {self.host}:{self.port} ({e}); is the port in use? "
                "Pick another with --listen HOST:PORT"
            ) from e
        finally:
            announce.cancel()

    async def _announce(self) -> None:
        """Log the bound address once the port is up (``--listen ...:0`` picks one)."""
        await self.wait_started(timeout_s=60)
        log.info("http_listening", host=self.host, port=self.bound_port, mcp="/mcp")

    def stop(self) -> None:
        self._server.should_exit = True

    async def wait_started(self, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not self._server.started:
                await asyncio.sleep(0.01)

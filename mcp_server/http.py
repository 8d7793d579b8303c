"""The daemon's one HTTP port: MCP at ``/mcp``, ``/metrics``, ``/healthz`` and ``/readyz``.

Built once, the way starlette builds its middleware stack: the MCP streamable-HTTP app
(with Host-header protection naming the hosts clients may use) carries the three plain
routes, and an optional bearer-token check wraps ``/mcp`` only, so probes and Prometheus
scrapes need no secret. ``/metrics`` renders the in-memory registry and never touches the
disk.
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
from starlette.types import ASGIApp, Receive, Scope, Send

from store.errors import XidwatchError

__all__ = ["HttpService", "Readiness", "allowed_hosts", "build_http_app", "read_token"]

log = structlog.get_logger("mcp_server.http")

# Readiness: part name -> None when fine, else what is wrong.
Readiness = Callable[[], Mapping[str, str | None]]

MAX_TOKEN_BYTES = 4096


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
    return _McpGuard(app, token)


class _McpGuard:
    """In front of ``/mcp``: the bearer token (constant-time compare) and POST only.

    The server is stateless and answers in JSON, so it never pushes: a GET would only open
    an event stream that stays idle and holds a connection, so it is refused.
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/mcp"):
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> Response | None:
        if self._expected is not None:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
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


@dataclass
class HttpService:
    """uvicorn serving ``app`` inside the daemon's event loop; ``stop()`` ends it gracefully."""

    app: ASGIApp
    host: str
    port: int
    name: str = "http"

    def __post_init__(self) -> None:
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
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

"""HTTP/1.1 for node calls: one POST, the answer read whole, the connection kept for the next.

A fleet question is one small POST to each of thousands of nodes. The general-purpose
client (httpx2) spent about 1 ms of the gateway's CPU on each, nearly all of it its pool's
bookkeeping and a cancel scope per socket operation; JSON and validation took 0.006 ms
(docs/performance.md). This pool does only what node calls need, on asyncio streams:

- ``http``, ``https`` with the caller's SSL context and server name, and an ``http://``
  forward proxy (``CONNECT`` for https, the absolute URL for http): what a kubeconfig's
  ``proxy-url`` can name (its client, aiohttp, supports no other kind either);
- answers with a ``Content-Length``, ``chunked``, or read to the end of the connection,
  refused past ``max_bytes``;
- keep-alive: a finished connection is kept per origin (a node's pod IP, or the API server
  when calls go through its pod proxy, where it saves a TLS handshake per call) for
  :data:`IDLE_S`, less than a daemon keeps it (5 s), so a kept connection is rarely one
  the other side is closing; one that is (the write lands, nothing comes back) is retried
  once on a new connection. Node tools only read, so a retry cannot do anything twice.

The caller bounds each call in time (``asyncio.timeout``); a call cut short closes its
connection. Failures are :class:`~mcp_server.gateway.errors.NodeCallError`: ``refused``
(no connection), ``transport`` (it broke) or ``protocol`` (not HTTP/1.1 as we speak it).
Prometheus queries, a handful per question, keep the general client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import resource
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from mcp_server.gateway.errors import GatewayError, NodeCallError

__all__ = ["IDLE_S", "ConnectionPool", "Response"]

IDLE_S = 4.0  # how long a connection is kept unused; below uvicorn's keep-alive of 5 s
MAX_HEAD_BYTES = 64 * 1024  # status line and headers, ours or a proxy's
MAX_INTERIM = 8  # 1xx answers before the real one; a node sending them forever is refused
MAX_TARGETS = 65_536  # URLs taken apart and remembered (a node's, or its pod proxy's)
_NO_BODY = frozenset({204, 304})


@dataclass(frozen=True, slots=True)
class Response:
    """A whole answer: the status, the headers (names lower-case) and the body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class _Target:
    """A URL taken apart once: where to connect and what to send."""

    origin: tuple[str, str, int]  # (scheme, host, port): connections are kept per origin
    authority: str  # the Host header: host[:port] as the URL wrote it
    request_target: str  # the path and query, or the whole URL through a proxy


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0

    def reusable(self, now: float) -> bool:
        """Still open, nothing unasked-for arrived, and not idle for too long."""
        stale = now - self.idle_since >= IDLE_S
        return not (stale or self.writer.is_closing() or self.reader.at_eof())

    def close(self) -> None:
        self.writer.close()


@dataclass(slots=True)
class _Proxy:
    host: str
    port: int
    authorization: str | None

    @classmethod
    def parse(cls, url: str) -> _Proxy:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise GatewayError(
                f"proxy {url!r}: only an http:// forward proxy is supported (as the "
                "Kubernetes client supports), e.g. proxy-url: http://proxy.corp:3128"
            )
        auth = None
        if parts.username is not None:
            user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            auth = "Basic " + base64.b64encode(user.encode()).decode()
        return cls(parts.hostname, parts.port or 80, auth)


@dataclass
class ConnectionPool:
    """Keep-alive connections to node daemons (or the API server), by origin.

    ``tls``: the context for ``https`` (default: the system's trust); ``server_hostname``:
    the TLS name to check when it is not the URL's host (a kubeconfig's
    ``tls-server-name``); ``proxy``: an ``http://`` proxy URL; ``max_idle``: the most
    connections kept unused at once, all origins together (default: a quarter of the open
    file limit, at most 4,096); ``clock``: what ages kept connections.
    """

    tls: ssl.SSLContext | None = None
    server_hostname: str | None = None
    proxy: str | None = None
    max_idle: int = 0
    clock: Callable[[], float] = time.monotonic
    _proxy: _Proxy | None = field(init=False, default=None)
    _idle: dict[tuple[str, str, int], deque[_Connection]] = field(init=False, default_factory=dict)
    _idle_count: int = field(init=False, default=0)
    _swept: float = field(init=False, default=0.0)
    _targets: dict[str, _Target] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._proxy = _Proxy.parse(self.proxy) if self.proxy else None
        self.max_idle = self.max_idle or _default_max_idle()
        self._swept = self.clock()

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, max_bytes: int
    ) -> Response:
        """POST ``body`` to ``url`` and read the whole answer (at most ``max_bytes``)."""
        target = self._target(url)
        request = _request(target, body, headers)
        conn, reused = await self._checkout(target)
        try:
            answer = await _exchange(conn, request, max_bytes)
            if answer is None and reused:  # the kept connection was closing: once more
                conn.close()
                conn = await self._connect(target)
                answer = await _exchange(conn, request, max_bytes)
        except BaseException:
            conn.close()
            raise
        if answer is None:
            conn.close()
            raise NodeCallError("transport", f"{url} closed the connection without answering")
        response, keep = answer
        if keep:
            self._checkin(target, conn)
        else:
            conn.close()
        return response

    async def aclose(self) -> None:
        """Close every kept connection, and wait until their sockets are."""
        conns = [conn for kept in self._idle.values() for conn in kept]
        self._idle.clear()
        self._idle_count = 0
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()

    @property
    def idle(self) -> int:
        """How many connections are kept unused now."""
        return self._idle_count

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) >= MAX_TARGETS:  # pods come and go: forget the old ones
                self._targets.clear()
            target = self._targets[url] = self._parse(url)
        return target

    def _parse(self, url: str) -> _Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise NodeCallError("protocol", f"{url!r} is not an http:// or https:// URL")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as e:
            raise NodeCallError("protocol", f"{url!r}: {e}") from e
        path = parts.path or "/"
        path += f"?{parts.query}" if parts.query else ""
        absolute = self._proxy is not None and parts.scheme == "http"
        authority = parts.netloc.rpartition("@")[2]  # never a user:password in Host
        return _Target((parts.scheme, parts.hostname, port), authority, url if absolute else path)

    async def _checkout(self, target: _Target) -> tuple[_Connection, bool]:
        """A kept connection to the target's origin (True), or a new one (False)."""
        conns = self._idle.get(target.origin)
        now = self.clock()
        while conns:
            conn = conns.pop()
            self._idle_count -= 1
            if conn.reusable(now):
                return conn, True
            conn.close()
        return await self._connect(target), False

    def _checkin(self, target: _Target, conn: _Connection) -> None:
        now = self.clock()
        if now - self._swept >= IDLE_S:
            self._sweep(now)
        if self._idle_count >= self.max_idle:
            conn.close()
            return
        conn.idle_since = now
        self._idle.setdefault(target.origin, deque()).append(conn)
        self._idle_count += 1

    def _sweep(self, now: float) -> None:
        """Close the connections kept too long: their sockets would linger half-closed."""
        self._swept = now
        for origin, conns in list(self._idle.items()):
            keep: deque[_Connection] = deque()
            for conn in conns:
                if conn.reusable(now):
                    keep.append(conn)
                else:
                    conn.close()
                    self._idle_count -= 1
            if keep:
                self._idle[origin] = keep
            else:
                del self._idle[origin]

    async def _connect(self, target: _Target) -> _Connection:
        scheme, host, port = target.origin
        tls = None
        if scheme == "https":
            tls = self.tls = self.tls or ssl.create_default_context()  # once: it loads the CAs
        name = self.server_hostname or host if tls else None
        try:
            if self._proxy is None:
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=name, limit=MAX_HEAD_BYTES
                )
                return _Connection(reader, writer)
            return await self._through_proxy(target, tls, name)
        except NodeCallError:
            raise
        except ssl.SSLError as e:
            raise NodeCallError("transport", f"TLS with {target.authority}: {e}") from e
        except OSError as e:
            where = f"{host}:{port}" + (" through the proxy" if self._proxy else "")
            raise NodeCallError("refused", f"cannot connect to {where}: {_os_reason(e)}") from e

    async def _through_proxy(
        self, target: _Target, tls: ssl.SSLContext | None, name: str | None
    ) -> _Connection:
        assert self._proxy is not None
        proxy = self._proxy
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port, limit=MAX_HEAD_BYTES)
        conn = _Connection(reader, writer)
        if tls is None:
            return conn  # plain http: each request names its whole URL
        try:
            auth = f"Proxy-Authorization: {proxy.authorization}\r\n" if proxy.authorization else ""
            head = f"CONNECT {target.authority} HTTP/1.1\r\nHost: {target.authority}\r\n{auth}\r\n"
            writer.write(head.encode())
            status, _, _ = _parse_head(await _read_head(reader))
            if status != 200:
                raise NodeCallError(
                    "refused",
                    f"the proxy {proxy.host}:{proxy.port} refused CONNECT {target.authority}: "
                    f"HTTP {status}",
                )
            await writer.start_tls(tls, server_hostname=name)
        except BaseException:
            conn.close()
            raise
        return conn


def _request(target: _Target, body: bytes, headers: Mapping[str, str]) -> bytes:
    lines = [f"POST {target.request_target} HTTP/1.1", f"Host: {target.authority}"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value:
            raise NodeCallError("protocol", f"header {name} holds a line break; refused to send")
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _exchange(
    conn: _Connection, request: bytes, max_bytes: int
) -> tuple[Response, bool] | None:
    """Send the request and read its answer and whether the connection can be kept; None
    when the connection closed before a byte of answer came (a kept one that timed out)."""
    try:
        conn.writer.write(request)
        try:
            head = await _read_head(conn.reader)
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                return None
            raise
        except ConnectionResetError:
            return None
        status, version, headers = _parse_head(head)
        interim = 0
        while 100 <= status < 200:  # 100 Continue and the like come before the answer
            interim += 1
            if interim > MAX_INTERIM:
                raise NodeCallError("protocol", f"more than {MAX_INTERIM} interim (1xx) answers")
            status, version, headers = _parse_head(await _read_head(conn.reader))
        body, to_eof = await _read_body(conn.reader, status, headers, max_bytes)
    except asyncio.IncompleteReadError as e:
        raise NodeCallError("transport", "the connection closed in the middle of the answer") from e
    except (ConnectionError, OSError) as e:
        raise NodeCallError("transport", f"{type(e).__name__}: {e}") from e
    return Response(status, headers, body), not to_eof and _keep_alive(version, headers)


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as e:
        raise NodeCallError("protocol", f"answer headers larger than {MAX_HEAD_BYTES} B") from e


def _parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    """(status, HTTP version, headers) of a response head."""
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit() or not 100 <= int(code) <= 599:
        raise NodeCallError("protocol", f"not an HTTP/1.x answer: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise NodeCallError("protocol", f"malformed answer header {line[:80]!r}")
        key, value = name.lower(), value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return int(code), version, headers


async def _read_body(
    reader: asyncio.StreamReader, status: int, headers: Mapping[str, str], max_bytes: int
) -> tuple[bytes, bool]:
    """The body, and whether it ran to the end of the connection (which then cannot be kept)."""
    if status in _NO_BODY:
        return b"", False
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader, max_bytes), False
    length = headers.get("content-length")
    if length is None:
        body = await reader.read(max_bytes + 1)
        while len(body) <= max_bytes and (more := await reader.read(max_bytes + 1 - len(body))):
            body += more
        _check_size(len(body), max_bytes)
        return body, True
    if not length.isdigit():
        raise NodeCallError("protocol", f"bad Content-Length {length[:40]!r}")
    _check_size(int(length), max_bytes)
    return await reader.readexactly(int(length)), False


async def _read_chunked(reader: asyncio.StreamReader, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            n = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError as e:
            raise NodeCallError("protocol", f"bad chunk size {line[:40]!r}") from e
        if n == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers, unused
            return b"".join(chunks)
        size += n
        _check_size(size, max_bytes)
        chunks.append(await reader.readexactly(n))
        if await reader.readexactly(2) != b"\r\n":
            raise NodeCallError("protocol", "a chunk does not end with CRLF")


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise NodeCallError("protocol", f"answer larger than {max_bytes} B")


def _keep_alive(version: str, headers: Mapping[str, str]) -> bool:
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    return "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens


def _os_reason(e: OSError) -> str:
    """ "Connection refused", not asyncio's "Connect call failed ('10.0.3.17', 9607)"."""
    if isinstance(e, socket.gaierror) or not e.errno:
        return e.strerror or str(e) or type(e).__name__
    return os.strerror(e.errno)


def _default_max_idle() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, min(4096, soft // 4)) if soft != resource.RLIM_INFINITY else 4096

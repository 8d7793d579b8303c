"""What one client may cost the daemon's HTTP port: bytes, JSON shape, time and connections.

The checks run on the raw body before anything is parsed into objects, so a request's
memory is known from the limits alone: at most ``max_body_bytes`` of bytes and
``max_json_values`` values, nested at most ``max_json_depth`` deep. The connection side is
an h11 protocol that closes a connection whose request has not fully arrived within
``request_timeout_s`` (a slowloris client) and keeps at most ``max_connections`` open: past
it, the connection that has waited longest on its client is closed to make room, and a
503 is the answer only when every connection has a request being answered.
"""

from __future__ import annotations

import asyncio
import math
import re
import resource
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import h11
import pydantic_core
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "HttpLimits",
    "body_problem",
    "bounded_h11",
    "connection_limit",
]

INVALID_REQUEST = -32600
PARSE_ERROR = -32700


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The port's bounds; the defaults suit a node daemon (tool calls are a few hundred bytes).

    Worst case per MCP request: the body (``max_body_bytes``) and the objects parsed from it
    (``max_json_values``, about 100 bytes each), and only ``max_mcp_in_flight`` of those at
    once; the others wait (``mcp_queue_s``) holding only their bytes, then get a 503.
    """

    max_body_bytes: int = 128 * 1024
    max_json_depth: int = 32
    max_json_values: int = 10_000
    max_string_bytes: int = 64 * 1024
    max_mcp_in_flight: int = 8
    mcp_queue_s: float = 10.0
    max_connections: int = 256
    request_timeout_s: float = 10.0  # from connecting, or a first byte, to the whole request
    keep_alive_s: int = 5  # an idle connection between requests
    max_header_bytes: int = 16 * 1024


def connection_limit(limits: HttpLimits, nofile: int | None = None) -> int:
    """``max_connections``, lowered to leave room under the process's file-descriptor limit."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0] if nofile is None else nofile
    if soft == resource.RLIM_INFINITY:
        return limits.max_connections
    return min(limits.max_connections, max(8, (soft - 64) // 2))


_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_DEPTH_STEP = [1 if c in b"[{" else -1 for c in range(256)]
_NAN = re.compile(rb"NaN|Infinity")
# A number that may not fit a float: a three-digit exponent, or 300 digits before the point.
_HUGE_NUMBER = re.compile(rb"-?[\d.]+[eE]\+?\d{3,}|-?\d{300,}\.\d*")


def body_problem(body: bytes, limits: HttpLimits) -> tuple[int, str] | None:
    """(JSON-RPC code, message) for a body to refuse before the MCP SDK parses it, or None.

    First its shape, from the raw bytes by C-speed scans alone (no object built, work linear
    in the body): depth, values (containers and separators), string size. Then, parsed once
    (small now by construction), what the SDK would mishandle: a batch array (it answers
    with a pydantic dump), ``NaN``/``Infinity`` or a number past a float (it takes them),
    an ``id`` that is not a string or integer (it takes the message for a notification:
    202, no answer).
    """
    parts = _ESCAPE.sub(b"_", body).split(b'"')  # odd parts are string contents
    outside = b"".join(parts[0::2])
    why = _shape_problem(parts, outside, limits)
    if why is not None:
        return INVALID_REQUEST, f"Invalid Request: {why}"
    try:
        message = pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as e:
        hint = " (NaN and Infinity are not JSON numbers)" if _NAN.search(outside) else ""
        return PARSE_ERROR, f"Parse error: {e}{hint}"
    for number in _HUGE_NUMBER.findall(outside):
        if math.isinf(float(number)):
            return PARSE_ERROR, f"Parse error: number {number[:40].decode()} is out of range"
    if isinstance(message, list):
        return (
            INVALID_REQUEST,
            "Invalid Request: batch arrays are not supported; send one JSON-RPC message per POST",
        )
    if isinstance(message, dict) and "id" in message and not _valid_id(message):
        return INVALID_REQUEST, "Invalid Request: id must be a string or an integer"
    return None


def _shape_problem(parts: list[bytes], outside: bytes, limits: HttpLimits) -> str | None:
    if max(map(len, parts[1::2]), default=0) > limits.max_string_bytes:
        return f"a JSON string is over {limits.max_string_bytes} bytes"
    brackets = outside.translate(None, _NOT_BRACKETS)
    containers = brackets.count(b"[") + brackets.count(b"{")
    if containers > limits.max_json_depth:
        deepest = max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)))
        if deepest > limits.max_json_depth:
            return f"JSON nested deeper than {limits.max_json_depth} levels"
    if containers + outside.count(b",") > limits.max_json_values:
        return f"JSON with more than {limits.max_json_values} values"
    return None


def _valid_id(message: dict[str, Any]) -> bool:
    id_ = message["id"]
    if id_ is None:  # only an error about a message whose id could not be read
        return "error" in message and "method" not in message
    return isinstance(id_, str | int) and not isinstance(id_, bool)


_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-type: text/plain\r\n"
    b"content-length: 37\r\n\r\nthe request did not arrive in time.\r\n"
)
_FULL = (
    b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: text/plain\r\n"
    b"retry-after: 1\r\ncontent-length: 36\r\n\r\ntoo many connections; retry later.\r\n"
)


class _BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a whole-request timeout and a connection cap.

    Past the cap, a new connection evicts the one that has waited longest on its client (a
    request not fully sent, or idle between requests), so stalled clients cannot lock out
    the probes; only when every connection has a request being answered is it refused (503).
    """

    request_timeout_s: float = 10.0
    max_connections: int = 256
    _request_timer: asyncio.TimerHandle | None = None
    _waiting_since: float | None = None  # waiting on the client since; None while answering

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._waiting_since = self.loop.time()
        if len(self.connections) > self.max_connections and not self._make_room():
            transport.write(_FULL)
            transport.close()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        self._arm()
        super().data_received(data)
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            self._disarm()  # the whole request is in (or the connection is ending)
            self._waiting_since = None

    def on_response_complete(self) -> None:
        self._waiting_since = self.loop.time()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _make_room(self) -> bool:
        """Close the connection waiting longest on its client, if the cap is really passed."""
        others = [c for c in self.connections if c is not self and not c.transport.is_closing()]
        if len(others) < self.max_connections:
            return True  # the excess is connections already closing
        waiting = [
            c for c in others if isinstance(c, _BoundedH11Protocol) and c._waiting_since is not None
        ]
        if not waiting:
            return False
        min(waiting, key=lambda c: c._waiting_since or 0.0)._give_up()
        return True

    def _arm(self) -> None:
        if self._request_timer is None and self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            self._waiting_since = self._waiting_since or self.loop.time()
            self._request_timer = self.loop.call_later(self.request_timeout_s, self._give_up)

    def _disarm(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _give_up(self) -> None:
        """Close a connection whose request has not arrived (in time, or at all)."""
        self._disarm()
        if self.transport.is_closing():
            return
        between = self.cycle is None or self.cycle.response_complete
        if between and self.conn.their_state is h11.IDLE:
            self.transport.write(_TIMED_OUT)  # headers unfinished, no response under way
        self.transport.close()


def bounded_h11(limits: HttpLimits) -> type[H11Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with ``limits`` applied."""
    return type(
        "BoundedH11Protocol",
        (_BoundedH11Protocol,),
        {
            "request_timeout_s": limits.request_timeout_s,
            "max_connections": connection_limit(limits),
        },
    )

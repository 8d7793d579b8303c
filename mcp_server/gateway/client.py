"""One MCP ``tools/call`` to a node daemon: a single JSON-RPC POST, no session.

Node daemons serve MCP statelessly with JSON responses, so a ``tools/call`` POSTed on its
own (no ``initialize``, no session id) is a complete exchange. The SDK client would open a
session, list the tools and compile their output schemas to validate every answer: about
40 ms of the gateway's CPU per node per question, against a fraction of a millisecond for
this POST over :mod:`~mcp_server.gateway.connections` (docs/performance.md). The answer
returned is the node's ``structuredContent``, untouched; a node's tool error (``isError``)
becomes a ``tool_error`` carrying the node's own message.
The :class:`~mcp_server.gateway.transport.Transport` adds its credentials and says what a
refusal means (the node's own, or the API server's when the call goes through its proxy).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Mapping
from typing import Any

from mcp_server.gateway.connections import ConnectionPool
from mcp_server.gateway.errors import NodeCallError
from mcp_server.gateway.transport import ERROR_BODY_BYTES, DirectTransport, Transport

__all__ = ["MAX_ANSWER_BYTES", "NodeClient"]

# The largest answer a node gives (get_metric_history: 8 metrics x 1000 buckets, as text and
# as structured content) is under 2 MiB; 32 calls at once at this cap stay within half the
# gateway's memory limit (512 MiB), whatever a broken or hostile node sends.
MAX_ANSWER_BYTES = 8 * 1024 * 1024
_TOOL_ERROR_PREFIX = "Error executing tool "
_ACCEPT = "application/json, text/event-stream"


class NodeClient:
    """Calls node tools over kept HTTP/1.1 connections."""

    def __init__(self, pool: ConnectionPool, transport: Transport | None = None) -> None:
        self._pool = pool
        self._transport = transport or DirectTransport()
        self._headers = {"Accept": _ACCEPT, "Content-Type": "application/json"}
        self._ids = itertools.count(1)

    async def call_tool(
        self, url: str, tool: str, arguments: Mapping[str, Any], *, timeout_s: float
    ) -> dict[str, Any]:
        """The node's structured answer, or a :class:`NodeCallError` saying why not."""
        request_id = next(self._ids)
        body = {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": tool, "arguments": dict(arguments)},
        }
        headers = self._headers | await self._transport.headers()
        try:
            async with asyncio.timeout(timeout_s):
                response = await self._pool.post(
                    url, json.dumps(body).encode(), headers, max_bytes=MAX_ANSWER_BYTES
                )
        except TimeoutError as e:
            raise NodeCallError("timeout", f"no answer within {timeout_s:g} s") from e
        if response.status != 200:
            head = response.body[:ERROR_BODY_BYTES]
            raise self._transport.refusal(response.status, head, url)
        message = _message(response.body, response.headers.get("content-type", ""), request_id)
        return _structured(message, tool)


def _message(raw: bytes, content_type: str, request_id: int) -> dict[str, Any]:
    """The JSON-RPC response: the body itself, or the matching event of an SSE answer."""
    try:
        if content_type.startswith("text/event-stream"):
            for line in raw.decode().splitlines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if isinstance(message, dict) and message.get("id") == request_id:
                        return message
            raise NodeCallError("protocol", "the event stream held no answer to the call")
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise NodeCallError("protocol", f"the answer is not JSON: {e}") from e
    if not isinstance(message, dict):
        raise NodeCallError("protocol", "the answer is not a JSON-RPC message")
    return message


def _structured(message: dict[str, Any], tool: str) -> dict[str, Any]:
    if (error := message.get("error")) is not None:
        text = error.get("message", error) if isinstance(error, dict) else error
        raise NodeCallError("protocol", f"JSON-RPC error: {text}")
    result = message.get("result")
    if not isinstance(result, dict):
        raise NodeCallError("protocol", "the answer has no result")
    if result.get("isError"):
        raise NodeCallError("tool_error", _error_text(result, tool))
    structured = result.get("structuredContent")
    if not isinstance(structured, dict):
        raise NodeCallError("protocol", f"{tool} answered without structured content")
    return structured


def _error_text(result: dict[str, Any], tool: str) -> str:
    texts = [c.get("text", "") for c in result.get("content") or () if isinstance(c, dict)]
    text = " ".join(t for t in texts if t) or "the tool failed without a message"
    prefix = f"{_TOOL_ERROR_PREFIX}{tool}: "
    return text.removeprefix(prefix)

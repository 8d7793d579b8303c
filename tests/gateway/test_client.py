"""The thin MCP client: one JSON-RPC POST, and every way a node can fail to answer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx2
import pytest

from mcp_server.gateway.client import NodeClient
from mcp_server.gateway.errors import NodeCallError

URL = "http://10.0.3.17:9400/mcp"
Handler = Callable[[httpx2.Request], httpx2.Response]


@asynccontextmanager
async def _client(handler: Handler, token: str | None = None) -> AsyncIterator[NodeClient]:
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http:
        yield NodeClient(http, token)


def _result(result: object) -> Handler:
    def handler(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        return httpx2.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": result})

    return handler


async def test_one_post_of_tools_call_returns_the_structured_content() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return _result({"content": [], "structuredContent": {"gpus": []}})(request)

    async with _client(handler, token="s3cret") as client:
        assert await client.call_tool(URL, "list_gpus", {"a": 1}, timeout_s=1) == {"gpus": []}
    (request,) = seen
    body = json.loads(request.content)
    assert body["method"] == "tools/call" and body["params"] == {
        "name": "list_gpus",
        "arguments": {"a": 1},
    }
    assert request.headers["authorization"] == "Bearer s3cret"
    assert request.headers["host"] == "10.0.3.17:9400"  # the pod IP: the node must allow it


async def test_a_node_tool_error_carries_the_nodes_own_message() -> None:
    text = "Error executing tool get_gpu_snapshot: GPU '9' matches no GPU"
    handler = _result({"content": [{"type": "text", "text": text}], "isError": True})
    async with _client(handler) as client:
        with pytest.raises(NodeCallError) as failed:
            await client.call_tool(URL, "get_gpu_snapshot", {}, timeout_s=1)
    assert failed.value.reason == "tool_error" and not failed.value.retryable
    assert failed.value.args[0] == "GPU '9' matches no GPU"


async def test_an_answer_sent_as_an_event_stream_is_read_too() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        message = {"jsonrpc": "2.0", "id": body["id"], "result": {"structuredContent": {"x": 1}}}
        stream = f"event: message\ndata: {json.dumps(message)}\n\n"
        return httpx2.Response(200, text=stream, headers={"content-type": "text/event-stream"})

    async with _client(handler) as client:
        assert await client.call_tool(URL, "list_gpus", {}, timeout_s=1) == {"x": 1}


@pytest.mark.parametrize(
    ("status", "reason", "retryable", "hint"),
    [
        (401, "http_401", False, "--node-token-file"),
        (421, "http_421", False, "--allowed-host"),
        (404, "http_4xx", False, "404"),
        (503, "http_5xx", True, "503"),
    ],
)
async def test_http_errors_map_to_a_reason_with_a_hint(
    status: int, reason: str, retryable: bool, hint: str
) -> None:
    async with _client(lambda request: httpx2.Response(status)) as client:
        with pytest.raises(NodeCallError) as failed:
            await client.call_tool(URL, "list_gpus", {}, timeout_s=1)
    assert failed.value.reason == reason and failed.value.retryable is retryable
    assert hint in str(failed.value)


async def test_json_rpc_errors_and_garbage_are_protocol_failures() -> None:
    def rpc_error(request: httpx2.Request) -> httpx2.Response:
        error = {"code": -32602, "message": "Unknown tool: nope"}
        return httpx2.Response(200, json={"jsonrpc": "2.0", "id": 1, "error": error})

    async with _client(rpc_error) as client:
        with pytest.raises(NodeCallError, match="Unknown tool: nope") as failed:
            await client.call_tool(URL, "nope", {}, timeout_s=1)
        assert failed.value.reason == "protocol"
    async with _client(lambda request: httpx2.Response(200, text="<html>")) as client:
        with pytest.raises(NodeCallError, match="not JSON"):
            await client.call_tool(URL, "list_gpus", {}, timeout_s=1)


async def test_connection_errors_and_timeouts_are_retryable() -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("Connection refused", request=request)

    def hang(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("timed out", request=request)

    for handler, reason in ((refuse, "refused"), (hang, "timeout")):
        async with _client(handler) as client:
            with pytest.raises(NodeCallError) as failed:
                await client.call_tool(URL, "list_gpus", {}, timeout_s=1)
        assert failed.value.reason == reason and failed.value.retryable

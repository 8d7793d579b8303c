"""The thin MCP client: one JSON-RPC POST, and every way a node can fail to answer, directly
or through the API server's pod proxy."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx2
import pytest

from mcp_server.gateway.client import NodeClient
from mcp_server.gateway.errors import NodeCallError
from mcp_server.gateway.transport import ApiProxyTransport, DirectTransport, PodEndpoint, Transport

URL = "http://10.0.3.17:9400/mcp"
Handler = Callable[[httpx2.Request], httpx2.Response]


@asynccontextmanager
async def _client(
    handler: Handler, token: str | None = None, *, transport: Transport | None = None
) -> AsyncIterator[NodeClient]:
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http:
        yield NodeClient(http, transport or DirectTransport(token))


@asynccontextmanager
async def _api_proxy() -> AsyncIterator[ApiProxyTransport]:
    """The transport over a kubeconfig's configuration: server, token (nothing is sent)."""
    from kubernetes.aio import client

    cfg = client.Configuration(host="https://kube.example.com:6443")
    cfg.api_key = {"BearerToken": "Bearer kube-token"}
    api = client.ApiClient(configuration=cfg)
    try:
        yield ApiProxyTransport(api)
    finally:
        await api.close()  # type: ignore[no-untyped-call]  # untyped library


PROXIED = "https://kube.example.com:6443/api/v1/namespaces/gpu/pods/xidwatch-a:9607/proxy/mcp"


def _status(code: int, message: str) -> httpx2.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message}
    return httpx2.Response(code, json=body | {"code": code})


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


async def test_through_the_api_proxy_the_call_carries_the_kubeconfigs_credential() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return _result({"content": [], "structuredContent": {"gpus": []}})(request)

    async with _api_proxy() as proxy:
        url = proxy.url(PodEndpoint("gpu", "xidwatch-a", "10.0.3.17", 9607))
        async with _client(handler, transport=proxy) as client:
            assert await client.call_tool(url, "list_gpus", {}, timeout_s=1) == {"gpus": []}
    assert url == PROXIED
    (request,) = seen
    assert request.headers["authorization"] == "Bearer kube-token"
    assert request.headers["host"] == "kube.example.com:6443"  # what the daemon sees too


@pytest.mark.parametrize(
    ("answer", "reason", "retryable", "hint"),
    [
        (_status(401, "Unauthorized"), "http_401", False, "kubectl auth whoami"),
        (_status(403, "pods/proxy is forbidden"), "http_403", False, "create on pods/proxy"),
        (_status(404, 'pods "xidwatch-a" not found'), "http_4xx", False, "no such pod"),
        (_status(503, "error trying to reach service"), "http_5xx", True, "could not reach"),
        (httpx2.Response(421, text="Invalid Host header"), "http_421", False, "=kube.example.com"),
        (httpx2.Response(401, json={"error": "no token"}), "http_401", False, "--via direct"),
    ],
)
async def test_through_the_api_proxy_a_refusal_says_who_refused_and_the_fix(
    answer: httpx2.Response, reason: str, retryable: bool, hint: str
) -> None:
    async with _api_proxy() as proxy, _client(lambda r: answer, transport=proxy) as client:
        with pytest.raises(NodeCallError) as failed:
            await client.call_tool(PROXIED, "list_gpus", {}, timeout_s=1)
    assert failed.value.reason == reason and failed.value.retryable is retryable
    assert hint in str(failed.value)

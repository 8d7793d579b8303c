"""The thin MCP client: one JSON-RPC POST, and every way a node can fail to answer, directly
or through the API server's pod proxy. The node is a real HTTP server on loopback
(:mod:`tests.gateway.http_peer`) answering byte for byte what each case needs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from mcp_server.gateway.client import NodeClient
from mcp_server.gateway.connections import ConnectionPool
from mcp_server.gateway.errors import NodeCallError
from mcp_server.gateway.transport import ApiProxyTransport, DirectTransport, PodEndpoint, Transport
from tests.gateway.http_peer import (
    DROP,
    HANG,
    Answer,
    HttpPeer,
    Seen,
    http_peer,
    json_answer,
    raw_answer,
    rpc_result,
)


@asynccontextmanager
async def _client(
    answer: Answer, token: str | None = None, *, transport: Transport | None = None
) -> AsyncIterator[tuple[NodeClient, HttpPeer]]:
    transport = transport or DirectTransport(token)
    pool = transport.pool()
    async with http_peer(answer) as peer:
        try:
            yield NodeClient(pool, transport), peer
        finally:
            await pool.aclose()


@asynccontextmanager
async def _api_proxy(
    server: str = "https://kube.example.com:6443",
) -> AsyncIterator[ApiProxyTransport]:
    """The transport over a kubeconfig's configuration: server, token."""
    from kubernetes.aio import client

    cfg = client.Configuration(host=server)
    cfg.api_key = {"BearerToken": "Bearer kube-token"}
    api = client.ApiClient(configuration=cfg)
    try:
        yield ApiProxyTransport(api)
    finally:
        await api.close()  # type: ignore[no-untyped-call]  # untyped library


PROXIED = "https://kube.example.com:6443/api/v1/namespaces/gpu/pods/xidwatch-a:9607/proxy/mcp"
PROXY_PATH = "/api/v1/namespaces/gpu/pods/xidwatch-a:9607/proxy/mcp"


def _status(code: int, message: str) -> bytes:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message}
    return json_answer(code, body | {"code": code})


GPUS = {"content": [], "structuredContent": {"gpus": []}}


async def test_one_post_of_tools_call_returns_the_structured_content() -> None:
    async with _client(rpc_result(GPUS), token="s3cret") as (client, peer):
        assert await client.call_tool(peer.url, "list_gpus", {"a": 1}, timeout_s=5) == {"gpus": []}
    (request,) = peer.seen
    assert request.line == "POST /mcp HTTP/1.1"
    body = request.json()
    assert body["method"] == "tools/call" and body["params"] == {
        "name": "list_gpus",
        "arguments": {"a": 1},
    }
    assert request.headers["authorization"] == "Bearer s3cret"
    assert request.headers["host"] == f"127.0.0.1:{peer.port}"  # the pod IP: the node allows it
    assert request.headers["accept"] == "application/json, text/event-stream"


async def test_a_node_asked_again_answers_on_the_same_connection() -> None:
    async with _client(rpc_result(GPUS)) as (client, peer):
        for _ in range(3):
            await client.call_tool(peer.url, "list_gpus", {}, timeout_s=5)
    assert [seen.connection for seen in peer.seen] == [1, 1, 1]
    assert len({seen.json()["id"] for seen in peer.seen}) == 3  # each call its own id


async def test_a_node_tool_error_carries_the_nodes_own_message() -> None:
    text = "Error executing tool get_gpu_snapshot: GPU '9' matches no GPU"
    answer = rpc_result({"content": [{"type": "text", "text": text}], "isError": True})
    async with _client(answer) as (client, peer):
        with pytest.raises(NodeCallError) as failed:
            await client.call_tool(peer.url, "get_gpu_snapshot", {}, timeout_s=5)
    assert failed.value.reason == "tool_error" and not failed.value.retryable
    assert failed.value.args[0] == "GPU '9' matches no GPU"


async def test_an_answer_sent_as_an_event_stream_is_read_too() -> None:
    def answer(seen: Seen) -> bytes:
        message = {
            "jsonrpc": "2.0",
            "id": seen.json()["id"],
            "result": {"structuredContent": {"x": 1}},
        }
        stream = f"event: message\ndata: {json.dumps(message)}\n\n".encode()
        return raw_answer(200, stream, headers={"Content-Type": "text/event-stream"})

    async with _client(answer) as (client, peer):
        assert await client.call_tool(peer.url, "list_gpus", {}, timeout_s=5) == {"x": 1}


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
    async with _client(lambda seen: raw_answer(status, b"")) as (client, peer):
        with pytest.raises(NodeCallError) as failed:
            await client.call_tool(peer.url, "list_gpus", {}, timeout_s=5)
    assert failed.value.reason == reason and failed.value.retryable is retryable
    assert hint in str(failed.value)


async def test_json_rpc_errors_and_garbage_are_protocol_failures() -> None:
    error = {"code": -32602, "message": "Unknown tool: nope"}
    rpc_error = json_answer(200, {"jsonrpc": "2.0", "id": 1, "error": error})
    async with _client(lambda seen: rpc_error) as (client, peer):
        with pytest.raises(NodeCallError, match="Unknown tool: nope") as failed:
            await client.call_tool(peer.url, "nope", {}, timeout_s=5)
        assert failed.value.reason == "protocol"
    async with _client(lambda seen: raw_answer(200, b"<html>")) as (client, peer):
        with pytest.raises(NodeCallError, match="not JSON"):
            await client.call_tool(peer.url, "list_gpus", {}, timeout_s=5)


async def test_a_refused_connection_and_a_silent_node_are_retryable() -> None:
    async with _client(lambda seen: HANG) as (client, peer):
        with pytest.raises(NodeCallError) as hung:
            await client.call_tool(peer.url, "list_gpus", {}, timeout_s=0.2)
        closed_port, address = peer.url, f"127.0.0.1:{peer.port}"  # closed when the block ends
    assert hung.value.reason == "timeout" and hung.value.retryable
    pool = ConnectionPool()
    with pytest.raises(NodeCallError) as refused:
        await NodeClient(pool).call_tool(closed_port, "list_gpus", {}, timeout_s=5)
    assert refused.value.reason == "refused" and refused.value.retryable
    assert refused.value.args[0] == f"cannot connect to {address}: Connection refused"


async def test_a_node_that_drops_the_call_is_a_transport_failure() -> None:
    async with _client(lambda seen: DROP) as (client, peer):
        with pytest.raises(NodeCallError) as failed:
            await client.call_tool(peer.url, "list_gpus", {}, timeout_s=5)
    assert failed.value.reason == "transport" and failed.value.retryable
    assert "closed the connection without answering" in str(failed.value)


async def test_through_the_api_proxy_a_node_is_its_pods_proxy_url_on_the_api_server() -> None:
    async with _api_proxy() as proxy:
        assert proxy.url(PodEndpoint("gpu", "xidwatch-a", "10.0.3.17", 9607)) == PROXIED


async def test_through_the_api_proxy_the_call_carries_the_kubeconfigs_credential() -> None:
    async with http_peer(rpc_result(GPUS)) as peer, _api_proxy(_server(peer)) as proxy:
        url = proxy.url(PodEndpoint("gpu", "xidwatch-a", "10.0.3.17", 9607))
        pool = proxy.pool()
        try:
            result = await NodeClient(pool, proxy).call_tool(url, "list_gpus", {}, timeout_s=5)
        finally:
            await pool.aclose()
    assert result == {"gpus": []}
    (request,) = peer.seen
    assert request.line == f"POST {PROXY_PATH} HTTP/1.1"
    assert request.headers["authorization"] == "Bearer kube-token"
    assert request.headers["host"] == f"127.0.0.1:{peer.port}"  # what the daemon sees too


@pytest.mark.parametrize(
    ("answer", "reason", "retryable", "hint"),
    [
        (_status(401, "Unauthorized"), "http_401", False, "kubectl auth whoami"),
        (_status(403, "pods/proxy is forbidden"), "http_403", False, "create on pods/proxy"),
        (_status(404, 'pods "xidwatch-a" not found'), "http_4xx", False, "no such pod"),
        (_status(503, "error trying to reach service"), "http_5xx", True, "could not reach"),
        (raw_answer(421, b"Invalid Host header"), "http_421", False, "--allowed-host=127.0.0.1"),
        (json_answer(401, {"error": "no token"}), "http_401", False, "--via direct"),
    ],
)
async def test_through_the_api_proxy_a_refusal_says_who_refused_and_the_fix(
    answer: bytes, reason: str, retryable: bool, hint: str
) -> None:
    async with http_peer(lambda seen: answer) as peer, _api_proxy(_server(peer)) as proxy:
        url = proxy.url(PodEndpoint("gpu", "xidwatch-a", "10.0.3.17", 9607))
        pool = proxy.pool()
        try:
            with pytest.raises(NodeCallError) as failed:
                await NodeClient(pool, proxy).call_tool(url, "list_gpus", {}, timeout_s=5)
        finally:
            await pool.aclose()
    assert failed.value.reason == reason and failed.value.retryable is retryable
    assert hint in str(failed.value)


def _server(peer: HttpPeer) -> str:
    return f"http://127.0.0.1:{peer.port}"

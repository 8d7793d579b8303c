"""The HTTP port's bounds, in process: body size and JSON shape, timeouts, connections, auth.

Each test serves a small MCP server through the daemon's own app and uvicorn settings
(:func:`build_http_app`, :class:`HttpService`) on a free loopback port, with limits small
enough to reach in a few requests, and speaks raw HTTP where the bytes matter.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from mcp.server.mcpserver import MCPServer

from mcp_server.http import HttpService, allowed_hosts, build_http_app
from mcp_server.http_limits import HttpLimits, body_problem, connection_limit
from tests.waiting import wait_until_async

MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
TOKEN = "t0ken"
DEFAULTS = HttpLimits()


@dataclass
class Served:
    port: int
    release: asyncio.Event  # lets the ``hold`` tool return
    holding: list[int]  # calls of ``hold`` under way (one entry each)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def serving(limits: HttpLimits = DEFAULTS, token: str | None = None) -> AsyncIterator[Served]:
    server = MCPServer("limits-test", log_level="WARNING")
    release = asyncio.Event()
    holding: list[int] = []

    @server.tool()
    def echo(x: int) -> int:
        """Returns x."""
        return x

    @server.tool()
    async def hold() -> str:
        """Returns once the test releases it."""
        holding.append(1)
        await release.wait()
        return "released"

    app = build_http_app(
        server,
        readiness=dict,
        hosts=allowed_hosts("127.0.0.1"),
        token=token,
        limits=limits,
    )
    service = HttpService(app, "127.0.0.1", 0, limits=limits)
    task = asyncio.create_task(service.run())
    try:
        await service.wait_started()
        assert service.bound_port is not None
        yield Served(service.bound_port, release, holding)
    finally:
        release.set()
        service.stop()
        async with asyncio.timeout(10):
            await task


def rpc(method: str, params: dict[str, Any] | None = None, id_: int = 1) -> bytes:
    return json.dumps(
        {"jsonrpc": "2.0", "id": id_, "method": method, "params": params or {}}
    ).encode()


async def post(served: Served, body: bytes, **headers: str) -> httpx2.Response:
    async with httpx2.AsyncClient(base_url=served.url, timeout=10) as c:
        return await c.post("/mcp", content=body, headers={**MCP_HEADERS, **headers})


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends before it closes the connection (10 s at most)."""
    async with asyncio.timeout(10):
        return await reader.read()


# -- bodies ----------------------------------------------------------------------------------


async def test_a_call_within_the_limits_is_answered() -> None:
    async with serving() as served:
        body = rpc("tools/call", {"name": "echo", "arguments": {"x": 7}})
        answer = (await post(served, body)).json()
    assert answer["result"]["structuredContent"] == {"result": 7}


def _many_small_objects(total_bytes: int) -> bytes:
    """The issue's body: a tool argument of many tiny objects, ~100 MB once parsed at 4 MiB."""
    head = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":'
    items = b",".join([b'{"a":1}'] * (total_bytes // 8))
    return head + b'{"x":1,"pad":[' + items + b"]}}}"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_over_the_size_limit_gets_413_before_it_is_parsed(chunked: bool) -> None:
    body = _many_small_objects((4 << 20) - 65536)  # under the SDK's own 413

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    async with serving() as served, httpx2.AsyncClient(base_url=served.url, timeout=10) as c:
        response = await c.post("/mcp", content=chunks() if chunked else body, headers=MCP_HEADERS)
        assert response.status_code == 413, response.text
        assert response.json()["error"] == {
            "code": -32600,
            "message": f"request body over {DEFAULTS.max_body_bytes} bytes",
        }
        assert (await post(served, rpc("ping"))).json()["result"] == {}  # and it still serves


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"a":' * 33 + b"1" + b"}" * 33, "nested deeper than 32 levels"),
        (_many_small_objects(60_000), "more than 10000 values"),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"s":"' + b"x" * 65537 + b'"}}',
            "string is over 65536 bytes",
        ),
    ],
    ids=["too-deep", "too-many-values", "string-too-long"],
)
async def test_json_too_deep_too_wide_or_with_a_huge_string_gets_a_json_rpc_error(
    body: bytes, says: str
) -> None:
    assert len(body) <= DEFAULTS.max_body_bytes  # the size alone would pass
    async with serving() as served:
        response = await post(served, body)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["id"] is None and answer["error"]["code"] == -32600
    assert says in answer["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"s": "[[[[{{{{,,,,,,,,"}',
        b'{"s": "\\"[[[[[[[[[[[[[[\\\\"}',
        b'{"n": [1, 2, 3]}',
    ],
    ids=["brackets-in-a-string", "escaped-quotes", "three-values"],
)
def test_brackets_and_commas_inside_strings_are_not_counted(body: bytes) -> None:
    tight = HttpLimits(max_json_depth=2, max_json_values=5)
    assert body_problem(body, tight) is None


def test_the_connection_limit_leaves_room_under_the_descriptor_limit() -> None:
    assert connection_limit(DEFAULTS, nofile=1 << 20) == DEFAULTS.max_connections
    assert connection_limit(DEFAULTS, nofile=256) == 96
    assert connection_limit(HttpLimits(max_connections=4), nofile=1 << 20) == 4


async def test_past_the_in_flight_limit_a_call_waits_then_gets_503() -> None:
    limits = HttpLimits(max_mcp_in_flight=1, mcp_queue_s=0.05)
    async with serving(limits) as served:
        held = asyncio.create_task(post(served, rpc("tools/call", {"name": "hold"})))
        statuses = []
        for _ in range(200):  # until the held call has its slot
            second = await post(served, rpc("ping"))
            statuses.append(second.status_code)
            if second.status_code == 503:
                break
        assert statuses[-1] == 503, statuses
        assert second.json()["error"]["message"] == "server busy: retry shortly"
        assert second.headers["retry-after"] == "1"
        served.release.set()
        first = await held
        assert first.json()["result"]["structuredContent"] == {"result": "released"}


# -- connections -----------------------------------------------------------------------------

SLOW = HttpLimits(request_timeout_s=0.2)


@pytest.mark.parametrize(
    ("sent", "says"),
    [
        (b"", b"408"),
        (b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le", b"408"),
        (b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{", b""),
    ],
    ids=["nothing", "half-the-headers", "half-the-body"],
)
async def test_a_request_that_does_not_arrive_in_time_is_closed(sent: bytes, says: bytes) -> None:
    async with serving(SLOW) as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(sent)
        await writer.drain()
        answer = await until_closed(reader)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 " + says) if says else b" 200 " not in answer


async def test_past_the_connection_limit_the_longest_stalled_connection_makes_room() -> None:
    limits = HttpLimits(max_connections=4, request_timeout_s=30)
    async with serving(limits) as served:
        stalled = []
        for _ in range(4):
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            writer.write(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            stalled.append((reader, writer))
        async with httpx2.AsyncClient(base_url=served.url, timeout=10) as c:
            assert (await c.get("/healthz")).status_code == 200
        evicted = await until_closed(stalled[0][0])
        for _, writer in stalled:
            writer.close()
    assert evicted.startswith(b"HTTP/1.1 408 Request Timeout")


async def test_when_every_connection_is_being_answered_a_new_one_gets_503_at_once() -> None:
    limits = HttpLimits(max_connections=4, max_mcp_in_flight=4)
    async with serving(limits) as served:
        calls = [
            asyncio.create_task(post(served, rpc("tools/call", {"name": "hold"}))) for _ in range(4)
        ]
        await wait_until_async(lambda: len(served.holding) >= 4, 10)
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        refused = await until_closed(reader)
        writer.close()
        served.release.set()
        answers = [(await call).json()["result"]["structuredContent"] for call in calls]
    assert refused.startswith(b"HTTP/1.1 503 Service Unavailable")
    assert answers == [{"result": "released"}] * 4


# -- the bearer token ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (f"Bearer {TOKEN}", 200),
        (f"bearer {TOKEN}", 200),
        (f"BEARER  {TOKEN}", 200),
        (f"Bearer {TOKEN}x", 401),
        (f"Basic {TOKEN}", 401),
        (TOKEN, 401),
        ("", 401),
    ],
    ids=["canonical", "lowercase", "uppercase-two-spaces", "wrong", "basic", "no-scheme", "none"],
)
async def test_the_bearer_scheme_is_matched_without_regard_to_case(
    authorization: str, status: int
) -> None:
    async with serving(token=TOKEN) as served:
        response = await post(served, rpc("ping"), Authorization=authorization)
    assert response.status_code == status, response.text

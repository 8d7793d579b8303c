"""The MCP server as clients reach it: `xidwatch mcp` over stdio, `xidwatch run` over HTTP."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.daemons import DaemonProcess

TOKEN = "s3cret-token-for-tests"
DAEMON_ARGS = (
    "--simulate",
    "2",
    "--sample-interval",
    "1",
    "--no-kmsg",
    "--allowed-host",
    "xidwatch.gpu-monitoring.svc",
)


@pytest.mark.slow
async def test_stdio_lists_tools_and_answers_calls(runaway_db: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "xidwatch", "--log-level", "warning", "mcp", "--db", str(runaway_db)],
    )
    async with Client(params) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"list_gpus", "correlate_xid", "get_gpu_health"} <= names
        gpus = await client.call_tool("list_gpus", {})
        assert len(gpus.structured_content["gpus"]) == 4
        xids = await client.call_tool("list_xid_events", {"since": "1d"})
        assert [e["xid"] for e in xids.structured_content["events"]] == [45, 79, 62]
        bad = await client.call_tool("get_gpu_snapshot", {"gpu": "7"})
        assert bad.is_error


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    tmp = tmp_path_factory.mktemp("http")
    (tmp / "token").write_text(TOKEN + "\n")
    d = DaemonProcess(tmp, [*DAEMON_ARGS, "--auth-token-file", str(tmp / "token")])
    yield d
    assert d.stop() == 0, d.log.read_text()


@asynccontextmanager
async def http_session(daemon: DaemonProcess, *, host: str | None = None) -> AsyncIterator[Client]:
    """A client with the bearer token (and a Host header); closes its HTTP client too."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if host:
        headers["Host"] = host
    async with create_mcp_http_client(headers=headers) as http:
        transport = streamable_http_client(f"{daemon.url}/mcp", http_client=http)
        async with Client(transport) as client:
            yield client


@pytest.mark.slow
async def test_http_serves_the_tools_with_the_bearer_token(daemon: DaemonProcess) -> None:
    async with http_session(daemon) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert len(names) == 10
        snap = await client.call_tool("get_gpu_snapshot", {"gpu": "0"})
        (gpu,) = snap.structured_content["gpus"]
        assert gpu["source"] == "live" and gpu["sample"]["temperature_c"] > 0
        health = await client.call_tool("get_gpu_health", {})
        assert not health.is_error


@pytest.mark.slow
async def test_http_accepts_the_configured_service_name_as_host(daemon: DaemonProcess) -> None:
    async with http_session(daemon, host=f"xidwatch.gpu-monitoring.svc:{daemon.port}") as client:
        assert (await client.call_tool("explain_xid", {"code": 79})).structured_content


@pytest.mark.slow
def test_mcp_without_the_token_is_refused_but_probes_and_metrics_are_open(
    daemon: DaemonProcess,
) -> None:
    status, body = daemon.get("/mcp")
    assert status == 401 and "bearer token" in body
    assert daemon.get("/mcp", Authorization="Bearer wrong")[0] == 401
    status, body = daemon.get("/mcp", Authorization=f"Bearer {TOKEN}")
    assert status == 405 and "POST" in body  # no idle event stream to hold a connection
    assert daemon.get("/healthz") == (200, "ok\n")
    status, body = daemon.get("/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
    assert {"writer", "nvml-sampler", "http"} <= set(json.loads(body)["parts"])
    status, body = daemon.get("/metrics")
    assert status == 200 and "# TYPE" in body


@pytest.mark.slow
def test_a_foreign_host_header_is_refused(daemon: DaemonProcess) -> None:
    request = urllib.request.Request(
        f"{daemon.url}/mcp",
        data=b"{}",
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Host": "evil.example",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        },
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    refused.value.close()
    assert refused.value.code in (400, 421)

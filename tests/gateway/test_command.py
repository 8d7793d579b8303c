"""``xidwatch gateway`` as a user runs it: over HTTP (discovering through the API) and stdio."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.daemons import XidwatchProcess
from tests.gateway.nodes import SPECS, Nodes, kube_listing

pytestmark = pytest.mark.slow

GATEWAY_TOKEN = "gateway-token-for-tests"


class GatewayProcess(XidwatchProcess):
    """``xidwatch gateway`` on a free loopback port, its JSON logs in a file."""

    def __init__(self, tmp: Path, args: list[str]) -> None:
        super().__init__(tmp / "gateway.log", ["gateway"], args, listen="127.0.0.1:0")


@pytest.fixture
def gateway(nodes: Nodes, tmp_path: Path) -> Iterator[GatewayProcess]:
    (tmp_path / "node-token").write_text((nodes.root / "token").read_text())
    (tmp_path / "gateway-token").write_text(GATEWAY_TOKEN)
    with kube_listing(nodes) as kube:
        process = GatewayProcess(
            tmp_path,
            [
                "--kubeconfig",
                str(kube.kubeconfig(tmp_path / "kubeconfig")),
                "--via",
                "direct",  # the daemons want a token, which cannot pass the API server
                "--node-port",
                str(nodes.port),
                "--node-token-file",
                str(tmp_path / "node-token"),
                "--auth-token-file",
                str(tmp_path / "gateway-token"),
                "--node-timeout",
                "3",
            ],
        )
        try:
            yield process
        finally:
            assert process.stop() == 0, process.log.read_text()


async def test_the_gateway_serves_fleet_answers_over_http_with_its_token(
    gateway: GatewayProcess,
) -> None:
    headers = {"Authorization": f"Bearer {GATEWAY_TOKEN}"}
    async with (
        create_mcp_http_client(headers=headers) as http,
        Client(streamable_http_client(f"{gateway.url}/mcp", http_client=http)) as client,
    ):
        summary = await client.call_tool("fleet_xid_summary", {"since": "1d"})
        snapshot = await client.call_tool("get_gpu_snapshot", {"node": "node-a", "gpu": "0"})
    assert summary.structured_content["nodes_answered"] == len(SPECS)
    assert summary.structured_content["by_node"][0]["node"] == "node-b"  # XID 64: replace
    assert snapshot.structured_content["result"]["gpus"][0]["source"] == "live"
    assert gateway.get("/mcp")[0] == 401
    assert gateway.get("/healthz") == (200, "ok\n")
    status, body = gateway.get("/readyz")
    assert status == 200 and json.loads(body) == {"ready": True, "parts": {"discovery": "ok"}}
    status, metrics = gateway.get("/metrics")
    assert status == 200
    assert (
        'xidwatch_gateway_node_request_seconds_count{node="node-a",tool="summarize_xid_events"} 1.0'
        in metrics
    )
    assert 'xidwatch_gateway_node_breaker_state{node="node-c"} 0.0' in metrics
    assert "xidwatch_gateway_nodes 3.0" in metrics


async def test_the_gateway_serves_stdio_for_a_static_node_list(
    nodes: Nodes, tmp_path: Path
) -> None:
    (tmp_path / "node-token").write_text((nodes.root / "token").read_text())
    args = ["-m", "xidwatch", "--log-level", "warning", "gateway", "--stdio"]
    args += ["--node-token-file", str(tmp_path / "node-token")]
    for spec in SPECS:
        args += ["--node", f"{spec.name}={nodes.url(spec.name)}"]
    async with Client(StdioServerParameters(command=sys.executable, args=args)) as client:
        listed = await client.call_tool("list_nodes", {})
        inventory = await client.call_tool("fleet_inventory", {})
    assert [n["name"] for n in listed.structured_content["nodes"]] == [s.name for s in SPECS]
    assert listed.structured_content["source"] == "static (--node)"
    assert inventory.structured_content["gpus_total"] == 12


def test_off_cluster_without_nodes_it_says_what_to_do_in_one_line(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "xidwatch", "--log-json", "gateway"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    *logs, last = done.stderr.strip().splitlines()
    assert done.returncode == 2 and all(line.startswith("{") for line in logs)
    assert last == (
        "xidwatch: error: no Kubernetes API to discover node daemons from (not in a pod with a "
        "service account, no usable kubeconfig): name them with --node NAME=URL (repeatable) "
        "or give --kubeconfig"
    )

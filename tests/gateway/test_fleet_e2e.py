"""The gateway end to end, in process: real node daemons found through the Kubernetes API by
the real client, the gateway's MCP server called with the real MCP client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mcp_server.gateway import CallPolicy, Fleet, KubeNodes, RetryPolicy, build_gateway_server
from mcp_server.gateway.discovery import DEFAULT_SELECTOR
from store.pacing import Backoff
from tests.gateway.fakes import StepClock
from tests.gateway.nodes import TOKEN, Nodes, kube_listing
from tests.kube_api import KubeApiServer
from watcher.k8s.client import connect_kubernetes

pytestmark = pytest.mark.slow

POLICY = CallPolicy(
    node_timeout_s=3, retry=RetryPolicy(retries=1, backoff=Backoff(0.01, 2.0, jitter=1.0))
)


@asynccontextmanager
async def gateway(
    kube: KubeApiServer, nodes: Nodes, tmp: Path, **options: Any
) -> AsyncIterator[tuple[Fleet, Client]]:
    """A fleet discovered through ``kube``, and an MCP client of the gateway serving it."""
    api = await connect_kubernetes(kube.kubeconfig(tmp / "kubeconfig"))
    assert api is not None
    lister = KubeNodes(api, default_port=nodes.port)
    options = {"policy": POLICY, "token": TOKEN, "refresh_s": 0, **options}
    async with Fleet(lister, **options) as fleet, Client(build_gateway_server(fleet)) as client:
        yield fleet, client


async def call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    structured: dict[str, Any] = result.structured_content
    return structured


async def test_fleet_tools_aggregate_every_node_worst_first(nodes: Nodes, tmp_path: Path) -> None:
    with kube_listing(nodes) as kube:
        async with gateway(kube, nodes, tmp_path) as (_, client):
            summary = await call(client, "fleet_xid_summary", since="1d")
            inventory = await call(client, "fleet_inventory")
            health = await call(client, "fleet_health", since="1d")
            attention = await call(client, "nodes_needing_attention", since="1d")
        (listing,) = kube.requests
    assert listing.path == "/api/v1/namespaces/gpu-monitoring/pods"
    assert listing.query["labelSelector"] == DEFAULT_SELECTOR
    assert (summary["nodes_asked"], summary["nodes_answered"], summary["nodes_failed"]) == (
        3,
        3,
        [],
    )
    # Worst first by what the XIDs need: a failed remap (64) replaces a GPU, a 79 reboots.
    assert [(n["node"], n["worst_needs"], n["total"]) for n in summary["by_node"]] == [
        ("node-b", "replace_gpu", 6),
        ("node-a", "reboot_node", 3),
        ("node-c", "restart_application", 16),
    ]
    assert (summary["rows"][0]["node"], summary["rows"][0]["xid"]) == ("node-b", 64)
    assert summary["total"] == 25
    assert inventory["gpus_total"] == 12 and len(inventory["nodes"]) == 3
    worst = health["gpus"][0]
    assert worst["status"] == "critical" and worst["node"] in ("node-a", "node-b")
    assert health["gpus_total"] == 12
    critical = [n["node"] for n in attention["nodes"] if n["status"] == "critical"]
    assert {"node-a", "node-b"} <= set(critical)
    assert any(
        "XID 79 (reboot_node)" in r for r in attention["nodes"][critical.index("node-a")]["reasons"]
    )


async def test_node_tools_forward_to_the_named_node_and_return_its_answer(
    nodes: Nodes, tmp_path: Path
) -> None:
    with kube_listing(nodes) as kube:
        async with gateway(kube, nodes, tmp_path) as (_, client):
            names = {t.name for t in (await client.list_tools()).tools}
            gpus = await call(client, "list_gpus", node="node-b")
            xids = await call(client, "list_xid_events", node="node-a", since="1d", codes=[79])
            listed = await call(client, "list_nodes")
            explained = await call(client, "explain_xid", code=48)
            bad_gpu = await client.call_tool("get_gpu_snapshot", {"node": "node-a", "gpu": "9"})
            unknown = await client.call_tool("list_gpus", {"node": "node-z"})
    assert {"list_gpus", "correlate_xid", "fleet_xid_summary", "list_nodes"} <= names
    assert gpus["node"] == "node-b" and gpus["result"]["node"] == "node-b"
    assert [g["name"] for g in gpus["result"]["gpus"]] == ["NVIDIA A100-SXM4-80GB"] * 4
    assert [e["xid"] for e in xids["result"]["events"]] == [79]
    assert [(n["name"], n["breaker"]) for n in listed["nodes"]] == [
        ("node-a", "closed"),
        ("node-b", "closed"),
        ("node-c", "closed"),
    ]
    assert listed["nodes"][0]["url"] == f"http://127.0.0.2:{nodes.port}/mcp"
    assert explained["immediate_action"] == "WORKFLOW_XID_48"
    assert bad_gpu.is_error and "node node-a: GPU '9' matches no GPU" in bad_gpu.content[0].text
    assert unknown.is_error and "known nodes: node-a, node-b, node-c" in unknown.content[0].text


async def test_discovery_drops_a_node_whose_pod_is_not_ready(nodes: Nodes, tmp_path: Path) -> None:
    with kube_listing(nodes) as kube:
        async with gateway(kube, nodes, tmp_path) as (fleet, client):
            kube.set_ready("xidwatch-node-b", False, "gpu-monitoring")
            await fleet.discovery.refresh()
            listed = await call(client, "list_nodes")
            inventory = await call(client, "fleet_inventory")
    assert [n["name"] for n in listed["nodes"]] == ["node-a", "node-c"]
    assert inventory["nodes_asked"] == 2


async def test_without_the_nodes_token_every_node_is_named_with_http_401(
    nodes: Nodes, tmp_path: Path
) -> None:
    with kube_listing(nodes) as kube:
        async with gateway(kube, nodes, tmp_path, token=None) as (_, client):
            inventory = await call(client, "fleet_inventory")
    assert inventory["nodes_answered"] == 0
    assert {f["reason"] for f in inventory["nodes_failed"]} == {"http_401"}
    assert "--node-token-file" in inventory["nodes_failed"][0]["error"]


async def test_a_killed_node_is_named_its_breaker_opens_and_it_recovers_after_restart(
    nodes: Nodes, tmp_path: Path
) -> None:
    clock = StepClock()
    with kube_listing(nodes) as kube:
        async with gateway(kube, nodes, tmp_path, clock=clock) as (fleet, client):
            nodes.kill("node-c")
            for _ in range(3):
                summary = await call(client, "fleet_xid_summary", since="1d")
                assert summary["nodes_answered"] == 2
                (failed,) = summary["nodes_failed"]
                assert (failed["node"], failed["reason"]) == ("node-c", "refused")
            refused = await call(client, "fleet_xid_summary", since="1d")
            assert refused["nodes_failed"][0]["reason"] == "breaker_open"
            assert "refused" in refused["nodes_failed"][0]["error"]
            direct = await client.call_tool("list_gpus", {"node": "node-c"})
            assert direct.is_error and "breaker_open" in direct.content[0].text
            listed = await call(client, "list_nodes")
            assert listed["nodes"][2]["breaker"] == "open"
            assert (
                fleet.metrics.registry.get_sample_value(
                    "xidwatch_gateway_node_breaker_state", {"node": "node-c"}
                )
                == 2
            )

            nodes.restart("node-c")
            clock.advance(POLICY.breaker_cooldown_s)
            assert (await call(client, "list_nodes"))["nodes"][2]["breaker"] == "half-open"
            recovered = await call(client, "fleet_xid_summary", since="1d")
            listed = await call(client, "list_nodes")
    assert recovered["nodes_answered"] == 3 and recovered["nodes_failed"] == []
    assert next(n for n in recovered["by_node"] if n["node"] == "node-c")["total"] == 16
    assert listed["nodes"][2]["breaker"] == "closed" and listed["nodes"][2]["last_error"]

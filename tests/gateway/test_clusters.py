"""One gateway over two clusters: two loopback API servers, two contexts in one kubeconfig,
real daemons behind each server's pod proxy. Nodes are named ``cluster/node``; a cluster
whose API server goes down is named in ``clusters_failed``, and the other still answers."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import ExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mcp_server.gateway import CallPolicy, Fleet, GatewayError, RetryPolicy, build_gateway_server
from mcp_server.gateway.connect import KubeTarget, kube_fleet
from tests.gateway.nodes import API_HOST, SPECS, Nodes, add_daemon_pods
from tests.gateway.test_fleet_e2e import call
from tests.kube_api import KubeApiServer

pytestmark = pytest.mark.slow

POLICY = CallPolicy(node_timeout_s=3, retry=RetryPolicy(retries=1))
CLUSTERS = {"east": ("node-a", "node-b"), "west": ("node-c",)}
XIDS = {s.name: s.xids for s in SPECS}


@pytest.fixture
def nodes(proxied_nodes: Nodes) -> Nodes:
    return proxied_nodes


@contextmanager
def clusters(nodes: Nodes) -> Iterator[dict[str, KubeApiServer]]:
    """An API server per cluster (each with its own token), listing that cluster's daemons
    at unroutable pod IPs that only its pod proxy reaches."""
    with ExitStack() as stack:
        servers = {}
        for cluster, names in CLUSTERS.items():
            kube = stack.enter_context(KubeApiServer(f"{cluster}-token", host=API_HOST))
            add_daemon_pods(kube, nodes, (s for s in SPECS if s.name in names), proxied=True)
            servers[cluster] = kube
        yield servers


def kubeconfig(path: Path, servers: Mapping[str, str | KubeApiServer]) -> Path:
    """One context per cluster, named for it, with its own user; the first is current.
    A cluster given as a URL has nobody listening there."""
    doc: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": []}
    doc["contexts"], doc["current-context"] = [], next(iter(servers))
    for name, server in servers.items():
        url, token = (server, "x") if isinstance(server, str) else (server.url, server.token)
        doc["clusters"].append({"name": name, "cluster": {"server": url}})
        doc["users"].append({"name": f"{name}-user", "user": {"token": token}})
        context = {"cluster": name, "user": f"{name}-user"}
        doc["contexts"].append({"name": name, "context": context})
    path.write_text(json.dumps(doc))
    return path


@asynccontextmanager
async def gateway(target: KubeTarget) -> AsyncIterator[tuple[Fleet, Client]]:
    fleet = await kube_fleet(target, policy=POLICY, refresh_s=0, environ={})
    async with fleet, Client(build_gateway_server(fleet)) as client:
        yield fleet, client


def failed(answer: dict[str, Any]) -> dict[str, str]:
    return {f["node"]: f["reason"] for f in answer["nodes_failed"]}


async def test_answers_name_each_clusters_nodes_and_a_cluster_that_goes_down_is_named(
    nodes: Nodes, tmp_path: Path
) -> None:
    with clusters(nodes) as servers:
        config = kubeconfig(tmp_path / "kubeconfig", servers)
        async with gateway(KubeTarget(kubeconfig=config, all_contexts=True)) as (fleet, client):
            listed = await call(client, "list_nodes")
            before = await call(client, "fleet_xid_summary", since="1d")
            snapshot = await call(client, "get_gpu_snapshot", node="west/node-c", gpu="0")
            plain = await client.call_tool("list_gpus", {"node": "node-c"})
            servers["west"].stop()  # west's API server goes down
            await fleet.discovery.refresh()  # the next listing (every --refresh seconds)
            after = await call(client, "fleet_xid_summary", since="1d")
            attention = await call(client, "nodes_needing_attention", since="1d")
            east_node = await call(client, "list_gpus", node="east/node-a")
            west_node = await client.call_tool("list_gpus", {"node": "west/node-c"})
            still_listed = await call(client, "list_nodes")
        requests = {name: kube.requests for name, kube in servers.items()}
    assert [n["name"] for n in listed["nodes"]] == ["east/node-a", "east/node-b", "west/node-c"]
    assert listed["clusters_failed"] == []
    assert "2 clusters (east, west)" in listed["source"]
    assert before["clusters_failed"] == [] and before["nodes_failed"] == []
    assert before["clusters"] == [
        {"cluster": "east", "nodes_asked": 2, "nodes_answered": 2},
        {"cluster": "west", "nodes_asked": 1, "nodes_answered": 1},
    ]
    assert before["total"] == sum(XIDS.values())
    assert {n["node"] for n in before["by_node"]} == {"east/node-a", "east/node-b", "west/node-c"}
    assert {r["node"].split("/")[0] for r in before["rows"]} == {"east", "west"}
    assert snapshot["node"] == "west/node-c" and snapshot["result"]["gpus"][0]["source"] == "live"
    assert plain.is_error and "known nodes: east/node-a, east/node-b, west/node-c" in str(
        plain.content
    )
    # West is down: named as a cluster, its node as a node; east answers as before.
    [west] = after["clusters_failed"]
    assert west["cluster"] == "west" and "cannot reach the Kubernetes API" in west["error"]
    assert failed(after) == {"west/node-c": "refused"}
    assert after["clusters"][1] == {"cluster": "west", "nodes_asked": 1, "nodes_answered": 0}
    assert after["total"] == XIDS["node-a"] + XIDS["node-b"]
    assert attention["clusters_failed"] == after["clusters_failed"]
    assert "west/node-c" in {n["node"] for n in attention["nodes"] if n["status"] == "unreachable"}
    assert len(east_node["result"]["gpus"]) == 4
    assert west_node.is_error and "node west/node-c did not answer" in str(west_node.content)
    assert [c["cluster"] for c in still_listed["clusters_failed"]] == ["west"]
    assert [n["name"] for n in still_listed["nodes"]][-1] == "west/node-c"  # the last list kept
    # Each cluster's calls carried its own credentials: no server refused a token.
    for name, seen in requests.items():
        assert seen and all(r.status != 401 for r in seen), name


async def test_a_cluster_down_from_the_start_is_named_and_the_other_answers(
    nodes: Nodes, tmp_path: Path
) -> None:
    with clusters(nodes) as servers:
        config = kubeconfig(tmp_path / "kubeconfig", {"gone": "http://127.0.0.1:9", **servers})
        target = KubeTarget(kubeconfig=config, contexts=("east", "gone"))
        async with gateway(target) as (fleet, _):
            inventory = await fleet.inventory()
    assert (inventory.nodes_asked, inventory.nodes_answered) == (2, 2)
    assert [n.node for n in inventory.nodes] == ["east/node-a", "east/node-b"]
    assert inventory.clusters_failed is not None
    assert [c.cluster for c in inventory.clusters_failed] == ["gone"]
    assert inventory.transport == "api-proxy"


async def test_one_context_keeps_plain_names_and_an_unknown_context_is_one_line(
    nodes: Nodes, tmp_path: Path
) -> None:
    with clusters(nodes) as servers:
        config = kubeconfig(tmp_path / "kubeconfig", servers)
        async with gateway(KubeTarget(kubeconfig=config, contexts=("west",))) as (fleet, _):
            summary = await fleet.xid_summary("1d")
        with pytest.raises(GatewayError) as unknown:
            await kube_fleet(KubeTarget(kubeconfig=config, contexts=("east", "north")), environ={})
        with pytest.raises(GatewayError) as both:
            target = KubeTarget(kubeconfig=config, contexts=("east",), all_contexts=True)
            await kube_fleet(target, environ={})
    assert [n.node for n in summary.by_node] == ["node-c"]
    assert summary.clusters is None and summary.clusters_failed is None
    assert str(unknown.value) == (
        "--context north: the kubeconfig has no such context; it has east, west"
    )
    assert "not both" in str(both.value)


def test_kubectl_xids_over_two_contexts_prints_a_table_per_cluster_node(
    nodes: Nodes, tmp_path: Path
) -> None:
    with clusters(nodes) as servers:
        config = kubeconfig(tmp_path / "kubeconfig", servers)
        env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "KUBECONFIG": str(config)}
        args = ["--context", "east", "--context", "west", "xids", "--all-nodes"]
        done = subprocess.run(
            [sys.executable, "-m", "xidwatch.kubectl", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    heads = [line for line in done.stdout.splitlines() if line.endswith(":")]
    assert heads == ["east/node-a:", "east/node-b:", "west/node-c:"]

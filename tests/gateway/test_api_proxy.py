"""The gateway through the API server's pod proxy, as from a laptop: the listed pod IPs are
loopback addresses where nothing listens, so every answer came through the proxy, with the
kubeconfig's token, past the daemons' Host protection."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mcp_server.gateway import CallPolicy, Fleet, GatewayError, RetryPolicy, build_gateway_server
from mcp_server.gateway.connect import NO_TOKEN_THROUGH_PROXY, KubeTarget, kube_fleet
from mcp_server.gateway.discovery import DEFAULT_NAMESPACE
from tests.gateway.nodes import LABELS, SPECS, Nodes, kube_listing
from tests.gateway.test_fleet_e2e import call
from tests.kube_api import KubeApiServer

pytestmark = pytest.mark.slow

POLICY = CallPolicy(node_timeout_s=3, retry=RetryPolicy(retries=1))


@pytest.fixture
def nodes(proxied_nodes: Nodes) -> Nodes:
    return proxied_nodes


@asynccontextmanager
async def gateway(kube: KubeApiServer, tmp: Path) -> AsyncIterator[tuple[Fleet, Client]]:
    """The gateway off-cluster with a kubeconfig: ``auto`` picks the API server's proxy."""
    target = KubeTarget(kubeconfig=kube.kubeconfig(tmp / "kubeconfig"))
    fleet = await kube_fleet(target, policy=POLICY, refresh_s=0, environ={})
    async with fleet, Client(build_gateway_server(fleet)) as client:
        yield fleet, client


@asynccontextmanager
async def silent(nodes: Nodes, name: str) -> AsyncIterator[None]:
    """The node's daemon stopped (SIGSTOP): connections open, nothing answers."""
    pid = nodes.daemons[name].proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def failures(answer: dict[str, Any]) -> dict[str, str]:
    return {f["node"]: f["reason"] for f in answer["nodes_failed"]}


async def test_every_fleet_tool_answers_through_the_proxy_with_a_silent_node_and_a_gone_pod(
    nodes: Nodes, tmp_path: Path
) -> None:
    with kube_listing(nodes, proxied=True) as kube:
        kube.add_pod(
            "xidwatch-node-d",
            DEFAULT_NAMESPACE,
            node="node-d",
            labels=LABELS,
            pod_ip="127.0.0.15",
            ports={"http": nodes.port},
        )
        async with gateway(kube, tmp_path) as (_, client):
            kube.remove_pod("xidwatch-node-d", DEFAULT_NAMESPACE)  # gone since discovery
            async with silent(nodes, "node-c"):
                inventory = await call(client, "fleet_inventory")
                summary = await call(client, "fleet_xid_summary", since="1d")
                health = await call(client, "fleet_health", since="1d")
                attention = await call(client, "nodes_needing_attention", since="1d")
                snapshot = await call(client, "get_gpu_snapshot", node="node-a", gpu="0")
                listed = await call(client, "list_nodes")
        proxied, requests, server = kube.proxied, kube.requests, kube.url
    expected = {"node-c": "timeout", "node-d": "http_4xx"}
    for answer in (inventory, summary, health, attention):
        assert answer["transport"] == "api-proxy"
        assert (answer["nodes_asked"], answer["nodes_answered"]) == (4, 2)
    for answer in (inventory, summary, health):
        assert failures(answer) == expected
    assert failures(attention) == {"node-c": "breaker_open", "node-d": "breaker_open"}
    gone = next(f for f in summary["nodes_failed"] if f["node"] == "node-d")
    assert "no such pod" in gone["error"] and "xidwatch-node-d" in gone["error"]
    assert inventory["gpus_total"] == 8
    assert summary["total"] == sum(s.xids for s in SPECS if s.name in ("node-a", "node-b"))
    assert {n["node"] for n in attention["nodes"] if n["status"] == "unreachable"} == {
        "node-c",
        "node-d",
    }
    assert snapshot["result"]["gpus"][0]["source"] == "live"
    port = nodes.port
    assert {n["name"]: n["url"] for n in listed["nodes"]}["node-a"] == (
        f"{server}/api/v1/namespaces/{DEFAULT_NAMESPACE}/pods/xidwatch-node-a:{port}/proxy/mcp"
    )
    # Every call passed the API server's authentication with the kubeconfig's token; the
    # daemons got no Authorization header, and the API server's name as Host.
    assert all(r.status != 401 for r in requests)
    assert proxied and all("authorization" not in h for h in proxied)
    assert {h["host"] for h in proxied} == {server.removeprefix("http://")}


async def test_a_daemon_that_does_not_allow_the_api_servers_name_refuses_it_421(
    nodes: Nodes, tmp_path: Path
) -> None:
    with KubeApiServer(host="127.0.0.10") as kube:
        spec = SPECS[0]
        kube.add_pod(
            f"xidwatch-{spec.name}",
            DEFAULT_NAMESPACE,
            node=spec.name,
            labels=LABELS,
            pod_ip="127.0.0.12",
            ports={"http": nodes.port},
        )
        kube.route("127.0.0.12", spec.ip)
        async with gateway(kube, tmp_path) as (_, client):
            inventory = await call(client, "fleet_inventory")
    [failure] = inventory["nodes_failed"]
    assert failure["reason"] == "http_421"
    assert "--allowed-host=127.0.0.10" in failure["error"]


async def test_an_rbac_refusal_is_the_api_servers_and_names_pods_proxy(
    nodes: Nodes, tmp_path: Path
) -> None:
    with kube_listing(nodes, proxied=True) as kube:
        async with gateway(kube, tmp_path) as (fleet, _):
            kube.fail_next(1, 403)
            summary = await fleet.xid_summary("1d")
    assert summary.nodes_answered == 2
    [failure] = summary.nodes_failed
    assert failure.reason == "http_403" and "pods/proxy" in failure.error


async def test_a_node_token_cannot_go_through_the_proxy_so_it_is_refused_at_start(
    tmp_path: Path,
) -> None:
    target = KubeTarget(kubeconfig=tmp_path / "kubeconfig", via="api-proxy")
    with pytest.raises(GatewayError) as refused:
        await kube_fleet(target, token="s3cret", environ={})
    assert str(refused.value) == NO_TOKEN_THROUGH_PROXY


EXEC_PLUGIN = """\
import json, sys
with open(sys.argv[1], "a") as runs:  # appends: runs at once do not lose a count
    runs.write("x")
status = {"token": sys.argv[2], "expirationTimestamp": "2020-01-01T00:00:00Z"}  # expired
print(json.dumps({"apiVersion": sys.argv[3], "kind": "ExecCredential", "status": status}))
"""


async def test_an_exec_plugins_token_is_used_and_renewed_once_it_has_expired(
    nodes: Nodes, tmp_path: Path
) -> None:
    plugin, runs = tmp_path / "login.py", tmp_path / "runs"
    plugin.write_text(EXEC_PLUGIN)
    with kube_listing(nodes, proxied=True) as kube:
        config = kube.kubeconfig(tmp_path / "kubeconfig")
        doc = json.loads(config.read_text())
        version = "client.authentication.k8s.io/v1beta1"
        args = [str(plugin), str(runs), kube.token, version]
        doc["users"][0]["user"] = {
            "exec": {"apiVersion": version, "command": sys.executable, "args": args}
        }
        config.write_text(json.dumps(doc))
        fleet = await kube_fleet(KubeTarget(kubeconfig=config), policy=POLICY, environ={})
        async with fleet:
            inventory = await fleet.inventory()
    assert (inventory.nodes_answered, inventory.transport) == (3, "api-proxy")
    assert len(runs.read_text()) > 2  # at load, then again for calls after it expired

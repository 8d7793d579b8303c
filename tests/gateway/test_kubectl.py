"""``kubectl xidwatch`` from a laptop: the kubeconfig's context, the API server's pod proxy to
real daemons (their listed pod IPs unroutable), and the node CLI's own tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from mcp_server.gateway.discovery import DEFAULT_NAMESPACE
from tests.gateway.nodes import Nodes, kube_listing
from tests.kube_api import KubeApiServer
from xidwatch import kubectl

pytestmark = pytest.mark.slow


def kubeconfig(kube: KubeApiServer, path: Path) -> Path:
    """Two contexts: the current one points where nothing listens, ``fake`` at ``kube``."""
    doc = json.loads(kube.kubeconfig(path).read_text())
    doc["clusters"].append({"name": "gone", "cluster": {"server": "http://127.0.0.1:9"}})
    doc["contexts"].append({"name": "elsewhere", "context": {"cluster": "gone", "user": "tester"}})
    doc["current-context"] = "elsewhere"
    path.write_text(json.dumps(doc))
    return path


def plugin(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``kubectl xidwatch ARGS`` as kubectl runs it: the plugin with $KUBECONFIG set."""
    env = {"HOME": str(config.parent), "PATH": "/usr/bin:/bin", "KUBECONFIG": str(config)}
    command = [sys.executable, "-m", "xidwatch.kubectl", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def node_cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "xidwatch", "--log-level", "error", *args, "--db", str(db)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_xids_on_all_nodes_prints_each_nodes_table_as_the_node_cli_does(
    proxied_nodes: Nodes, tmp_path: Path
) -> None:
    with kube_listing(proxied_nodes, proxied=True) as kube:
        config = kubeconfig(kube, tmp_path / "kubeconfig")
        done = plugin(config, "--context", "fake", "xids", "--all-nodes", "--since", "24h")
    assert done.returncode == 0, done.stderr
    blocks = dict(block.split(":\n", 1) for block in done.stdout.strip().split("\n\n"))
    assert sorted(blocks) == ["node-a", "node-b", "node-c"]
    for name, table in blocks.items():
        local = node_cli(proxied_nodes.daemons[name].db, "xids", "--since", "24h")
        assert table == local.stdout.strip(), name


def test_health_of_one_node_in_the_current_context_matches_the_node_cli(
    proxied_nodes: Nodes, tmp_path: Path
) -> None:
    with kube_listing(proxied_nodes, proxied=True) as kube:
        config = kube.kubeconfig(tmp_path / "kubeconfig")  # its current context: the fake
        done = plugin(config, "health", "--node", "node-b")
    local = node_cli(proxied_nodes.daemons["node-b"].db, "health")
    assert done.returncode == local.returncode == 4, done.stderr  # XID 64 on node-b: critical
    gpu_lines = [line for line in done.stdout.splitlines() if line.startswith("GPU ")]
    assert len(gpu_lines) == 4
    assert done.stdout.splitlines()[-1] == local.stdout.splitlines()[-1]  # the node's verdict


def test_a_namespace_without_daemons_or_an_unknown_node_is_one_line_naming_them(
    proxied_nodes: Nodes, tmp_path: Path
) -> None:
    with kube_listing(proxied_nodes, proxied=True) as kube:
        config = kube.kubeconfig(tmp_path / "kubeconfig")
        empty = plugin(config, "-n", "elsewhere", "health", "--node", "node-a")
        unknown = plugin(config, "xids", "--node", "node-z")
    assert empty.returncode == unknown.returncode == 2
    assert empty.stderr.strip().splitlines()[-1].startswith("xidwatch: error: no node 'node-a'")
    assert "known nodes: node-a, node-b, node-c" in unknown.stderr


def test_the_plugin_looks_for_the_daemons_where_the_gateway_does() -> None:
    assert kubectl.DEFAULT_NAMESPACE == DEFAULT_NAMESPACE


def test_cluster_options_may_also_follow_the_command() -> None:
    group = typer.main.get_command(kubectl.app)
    args = ["xids", "--all-nodes", "--context", "a", "-n", "ns", "--context=b", "--since", "1h"]
    ctx = group.make_context("kubectl-xidwatch", args)
    assert (ctx.params["context"], ctx.params["namespace"]) == (["a", "b"], "ns")
    assert ctx.args == ["--all-nodes", "--since", "1h"]  # and the command, xids


def test_trend_draws_the_node_clis_chart_from_the_nodes_answers(
    proxied_nodes: Nodes, tmp_path: Path
) -> None:
    with kube_listing(proxied_nodes, proxied=True) as kube:
        config = kubeconfig(kube, tmp_path / "kubeconfig")
        done = plugin(config, "trend", "--node", "node-a", "--context", "fake")  # after it
    local = node_cli(proxied_nodes.daemons["node-a"].db, "trend")
    assert done.returncode == local.returncode == 0, done.stderr
    remote_blocks, local_blocks = (p.stdout.strip().split("\n\n") for p in (done, local))
    assert len(remote_blocks) == len(local_blocks) == 4
    for remote, here in zip(remote_blocks, local_blocks, strict=True):
        remote_head, here_head = remote.splitlines()[0], here.splitlines()[0]
        assert remote_head.split(", ")[0] == here_head.split(", ")[0]  # GPU, metric, tier, step
    # GPU 2 fell off the bus (XID 79) in the scenario: it has no new samples, nothing moves.
    [lost] = [i for i, block in enumerate(local_blocks) if "79 @" in block]
    assert remote_blocks[lost].splitlines()[1:] == local_blocks[lost].splitlines()[1:]
    assert "; shutdown temperature" in local_blocks[lost]  # the limit past the crossed one

"""The gateway fan-out benchmark still runs end to end: a benchmark that rots prints no figure.

Small and quick (10 fake nodes, one silent, a 0.3 s node timeout; then fleets of 10 and 12
nodes, every one answering); what it checks is the shape of the answers (who answered, who
was named, how they were reached), never how long anything took.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.prometheus_server import requires_prometheus

pytestmark = pytest.mark.slow


@requires_prometheus
def test_the_fanout_benchmark_runs_and_names_the_silent_node() -> None:
    command = [sys.executable, "-m", "bench.gateway_fanout", "--quick", "--nodes", "10", "12"]
    command += ["--rounds", "4", "--node-timeout", "0.3"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    out = done.stdout
    assert "time out" in out and "refused (breaker open)" in out
    assert "9 / 1" in out and "9 / 0" in out  # the silent node is named as failed, then left out
    every_tool = out.split("every fleet tool, nodes found through the Kubernetes API:")[1]
    for tool in ("fleet_xid_summary", "fleet_health", "nodes_needing_attention", "fleet_inventory"):
        assert tool in every_tool
    assert "peak" in every_tool
    reach = every_tool.split("fleet XID summary by how the gateway reaches the nodes")[1]
    rows = {line.split("  ")[0]: line for line in reach.splitlines()[3:6]}
    assert rows.keys() == {
        "pod IPs (--via direct)",
        "API server's pod proxy (--via api-proxy)",
        "Prometheus (--prometheus-url), every node listed",
    }
    # ... answered / failed, transport (as the answer says), nodes answered from Prometheus
    assert rows["pod IPs (--via direct)"].split()[-5:] == ["9", "/", "0", "direct", "0"]
    assert rows["API server's pod proxy (--via api-proxy)"].split()[-2:] == ["api-proxy", "0"]
    # Prometheus answers for all 10 nodes, the silent one included, without asking any.
    prometheus = rows["Prometheus (--prometheus-url), every node listed"].split()
    assert prometheus[-5:] == ["10", "/", "0", "direct", "10"]
    growing = reach.split("fleet XID summary as the fleet grows")[1]
    assert "10 nodes" in growing and "12 nodes" in growing and "12 / 0" in growing
    assert "CPU ms / answer" in growing

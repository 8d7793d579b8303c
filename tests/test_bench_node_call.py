"""The node call benchmark still runs end to end: a benchmark that rots prints no figure.

Quick (40 fake nodes, two passes); what it checks is that both clients are measured both
ways, never how long anything took.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_the_node_call_benchmark_measures_our_client_and_the_peer_both_ways() -> None:
    command = [sys.executable, "-m", "bench.node_call", "--quick"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-4000:]
    out = done.stdout
    assert "xidwatch NodeClient" in out and "httpx2 (peer)" in out
    assert "every node once" in out and "the same 32 nodes again" in out
    assert "peer / ours" in out and len(re.findall(r" \d+\.\dx$", out, re.MULTILINE)) == 2

"""The query benchmark still runs end to end, its Prometheus peer beside the store.

What it checks is the shape of the answers, never how long anything took: that Prometheus
was asked for the same samples the store answers from (each query_range point over exactly
one store bucket, so the samples it read are the window's, no more), row for row.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from bench._prometheus_tsdb import missing_tools

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(missing_tools() is not None, reason=str(missing_tools())),
]


def test_the_query_benchmark_asks_prometheus_the_stores_windows_side_by_side() -> None:
    command = [sys.executable, "-m", "bench.query"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    rows = [re.split(r"\s{2,}", line.strip()) for line in done.stdout.splitlines()]
    order = [cells[0] for cells in rows if len(cells) >= 4]
    answers = {cells[0]: cells[1] for cells in rows if len(cells) >= 4}
    # 48 h of one GPU at 10 s; 30 days of 8 GPUs (48 h at 10 s, 1/min before): all read.
    assert answers["Prometheus query_range, step 3 min"] == "1 x 960 points, 17,280 samples"
    assert answers["Prometheus query_range, step 3 h"] == "8 x 240 points, 460,800 samples"
    assert answers["Prometheus instant query"] == "8 x 1 points, 8 samples"
    # Each printed under the store's row for the same window.
    for store_row, peer_row in [
        ("48 h, 1 GPU, 1000 buckets, auto tier", "Prometheus query_range, step 3 min"),
        ("peer: raw rows at 1/min, GROUP BY", "Prometheus query_range, step 3 h"),
        ("latest snapshot, 8 GPUs", "Prometheus instant query"),
    ]:
        assert order.index(peer_row) == order.index(store_row) + 1

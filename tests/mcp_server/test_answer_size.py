"""Answers sized for a model: each typical question on the demo store stays within its budget.

The questions and budgets live in ``bench/answer_size.py``, which prints the table in
docs/mcp.md; a tool whose answer grows past its budget fails here, before an assistant pays
for it in tokens.
"""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_every_typical_answer_stays_within_its_budget() -> None:
    command = [sys.executable, "-m", "bench.answer_size"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines()[2:] if line.strip()]
    assert len(rows) >= 10  # every tool is asked
    assert {r.split()[0] for r in rows} >= {"get_gpu_health", "correlate_xid", "list_xid_events"}

"""The start-up benchmark still runs end to end: a benchmark that rots prints no figure.

One run per command; what it checks is that every command and the peer are timed, never
how long anything took.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_the_startup_benchmark_times_every_command_and_its_peer() -> None:
    command = [sys.executable, "-m", "bench.startup", "--runs", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-4000:]
    for row in ("python -c pass (peer)", "xidwatch --help", "explain 79", "xids --db"):
        assert row in done.stdout

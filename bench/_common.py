"""Helpers shared by the benchmarks: production-like logging, summaries, plain tables."""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import platform
import sqlite3
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from watcher.logs import configure_logging

__all__ = [
    "Spread",
    "fmt_int",
    "listening_port",
    "log_like_production",
    "machine_line",
    "percentile",
    "stop_process",
    "table",
]


@dataclass(frozen=True, slots=True)
class Spread:
    """The median of repeated measurements with their min and max."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        ordered = sorted(values)
        n = len(ordered)
        mid = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
        return cls(mid, ordered[0], ordered[-1])

    def show(self, fmt: str = "{:,.0f}") -> str:
        """``median [min .. max]`` in ``fmt``."""
        return f"{fmt.format(self.median)} [{fmt.format(self.low)} .. {fmt.format(self.high)}]"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0..100) of ``values``; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def fmt_int(n: float) -> str:
    return f"{n:,.0f}"


def log_like_production() -> None:
    """structlog as ``xidwatch run`` sets it (info, JSON), rendered into /dev/null.

    The writer logs one ``xid_stored`` line per stored event, so rendering is part of the
    cost measured; the lines themselves would drown the figures.
    """
    sink = open(os.devnull, "w")  # noqa: SIM115 -- kept open for the whole process
    atexit.register(sink.close)
    configure_logging("info", json=True, stream=sink)


def machine_line() -> str:
    return (
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs, {platform.machine()} {platform.system()} {platform.release()}"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def listening_port(
    proc: subprocess.Popen[bytes], log_path: Path, *, what: str, timeout_s: float = 60.0
) -> int:
    """The port from the ``http_listening`` line in the JSON log of ``what`` (a command)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("event") == "http_listening":
                    return int(entry["port"])
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    tail = "\n".join(log_path.read_text().splitlines()[-20:])
    raise RuntimeError(f"{what} did not report http_listening:\n{tail}")


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """SIGTERM and wait, SIGKILL after ``timeout_s``: a benchmark leaves no process behind."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

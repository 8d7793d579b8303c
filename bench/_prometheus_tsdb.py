"""A Prometheus TSDB holding series the benchmarks build, and a real Prometheus serving it.

The peer a user would pick instead of asking xidwatch's store or its nodes: the daemons'
series as Prometheus would have scraped them, written as OpenMetrics with their timestamps,
turned into blocks by ``promtool tsdb create-blocks-from openmetrics`` (the documented
backfill path) and served by Debian's ``prometheus`` through the tests' own launcher
(:func:`tests.prometheus_server.start_prometheus`). Labels are the daemon's (``docs/metrics.md``)
plus the target labels the shipped ServiceMonitor gives every scrape (``job``, ``node``).

Not a benchmark itself (hence the ``_``: ``python -m bench`` skips it).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PROMTOOL",
    "Family",
    "Series",
    "create_blocks",
    "missing_tools",
    "prometheus_serving",
    "target_labels",
    "write_openmetrics",
]

PROMTOOL = shutil.which("promtool")
INSTALL = "apt-get install --no-install-recommends prometheus (it has promtool)"
DAEMON_PORT = 9607  # watcher.settings.DEFAULT_PORT: what instance= says


@dataclass(frozen=True, slots=True)
class Series:
    """One series: its labels, and its samples as (ms since the epoch, value), oldest first."""

    labels: Mapping[str, str]
    points: Sequence[tuple[int, float]]


@dataclass(frozen=True, slots=True)
class Family:
    """A metric as PromQL names it (a counter's ends in ``_total``), its type, its series."""

    name: str
    kind: str  # "counter" or "gauge"
    series: Iterable[Series]


def target_labels(node: str) -> dict[str, str]:
    """The labels a scrape of ``node``'s daemon adds (the ServiceMonitor's ``job``, ``node``)."""
    return {
        "job": "xidwatch",
        "instance": f"{node}:{DAEMON_PORT}",
        "namespace": "gpu-monitoring",
        "pod": f"xidwatch-{node}",
        "node": node,
    }


def missing_tools() -> str | None:
    """Why the Prometheus peer cannot run here, or None."""
    from tests.prometheus_server import PROMETHEUS

    if PROMETHEUS is None or PROMTOOL is None:
        return f"prometheus or promtool not installed ({INSTALL})"
    return None


def write_openmetrics(path: Path, families: Iterable[Family]) -> int:
    """``families`` as an OpenMetrics text file (each series whole, in time order); the
    number of samples written."""
    samples = 0
    with path.open("w") as out:
        for family in families:
            base = family.name.removesuffix("_total") if family.kind == "counter" else family.name
            out.write(f"# TYPE {base} {family.kind}\n")
            for series in family.series:
                labels = ",".join(f'{k}="{_escape(v)}"' for k, v in series.labels.items())
                head = f"{family.name}{{{labels}}} "
                out.writelines(
                    f"{head}{v} {ts // 1000}.{ts % 1000:03d}\n" for ts, v in series.points
                )
                samples += len(series.points)
        out.write("# EOF\n")
    return samples


def create_blocks(openmetrics: Path, tsdb: Path, *, block_hours: int) -> None:
    """TSDB blocks of at most ``block_hours`` from ``openmetrics`` into ``tsdb`` (promtool
    rounds down to 2 h x 3^n; choose what the server's own compaction would make, so it
    finds nothing to compact while it is measured)."""
    if PROMTOOL is None:
        raise RuntimeError(f"promtool is not installed: {INSTALL}")
    tsdb.mkdir(parents=True, exist_ok=True)
    command = [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "--quiet"]
    command += [f"--max-block-duration={block_hours}h", str(openmetrics), str(tsdb)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-2000:]}")


@contextlib.contextmanager
def prometheus_serving(root: Path, *, retention: str = "15d") -> Iterator[str]:
    """A real Prometheus on ``root / "tsdb"`` (blocks made by :func:`create_blocks`),
    scraping nothing; yields its base URL, stops it at the end.

    ``retention`` counts back from the newest block: longer than the data, or Prometheus
    deletes the oldest blocks on start.
    """
    from tests.prometheus_server import start_prometheus

    with contextlib.ExitStack() as stack:
        flags = [f"--storage.tsdb.retention.time={retention}"]
        yield start_prometheus(stack, root, flags=flags).url


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

"""Overhead: what the node daemon costs a GPU node, in CPU and memory.

What is measured: the real :class:`watcher.daemon.Daemon` with 8 simulated GPUs
(``--simulate 8``: the simulator stands in for ``libnvidia-ml`` behind the real pynvml, and
its in-memory kernel log is read by the real kmsg source) sampling every second, the NVML
XID event thread, the batched writer keeping raw rows and rollups, and retention, for
``--seconds`` seconds (default 60) in a subprocess of its own, so its CPU time and memory
are its own. Logging as in production (info, JSON) rendered into /dev/null.

- CPU % of one core: the process's CPU time (user + system, every thread) over wall time,
  from the daemon being ready to the stop signal (steady state), and over the whole
  process life (interpreter start, imports, store creation and shutdown included);
- peak RSS: ``VmHWM`` read by the child from ``/proc/self/status`` at exit. (Not the
  parent's ``RUSAGE_CHILDREN`` ``ru_maxrss``: Linux carries the forking parent's
  high-water mark across ``exec``, so under ``python -m bench`` it reads the parent's
  80 MiB, not the daemon's.)
- samples stored (the writer's count), ticks taken and skipped.

Peer: a subprocess that imports the same modules and sleeps, which is the floor that the
Python interpreter and xidwatch's dependencies set before the daemon does anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import bench
from bench._common import log_like_production, table

__all__ = ["main"]

GPUS = 8
INTERVAL_S = 1.0
DEFAULT_SECONDS = 60.0
BASELINE_SECONDS = 5.0
READY_TIMEOUT_S = 60.0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _status_kib(field: str) -> int:
    """A ``VmXXX`` line of ``/proc/self/status``, in KiB (0 where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


async def _run_daemon(seconds: float, db: Path) -> dict[str, float]:
    from watcher.config import DaemonConfig, SimulationSpec
    from watcher.daemon import Daemon

    config = DaemonConfig(
        db_path=db,
        node="bench",
        simulate=SimulationSpec(gpus=GPUS),
        sample_interval_s=INTERVAL_S,
        kmsg=True,
    )
    daemon = Daemon(config)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    ready = asyncio.create_task(daemon.ready.wait())
    await asyncio.wait([task, ready], timeout=READY_TIMEOUT_S, return_when="FIRST_COMPLETED")
    if not daemon.ready.is_set():
        ready.cancel()
        stop.set()
        await task  # raises what stopped it
        raise RuntimeError(f"the daemon was not ready within {READY_TIMEOUT_S:g} s")
    cpu0, wall0 = _cpu_s(), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu1, wall1 = _cpu_s(), time.perf_counter()
    rss_kib = _status_kib("VmRSS")
    stop.set()
    await task
    sampler = daemon.sampler
    with sqlite3.connect(db) as conn:
        rows = int(conn.execute("SELECT count(*) FROM samples").fetchone()[0])
    return {
        "steady_cpu_s": cpu1 - cpu0,
        "steady_wall_s": wall1 - wall0,
        "rss_kib": rss_kib,
        "samples_stored": daemon.writer.stats.samples_stored,
        "sample_rows": rows,
        "samples_shed": daemon.writer.stats.samples_shed,
        "ticks": sampler.stats.ticks if sampler else 0,
        "ticks_skipped": sampler.stats.ticks_skipped if sampler else 0,
        "gpus": len(sampler.devices) if sampler else 0,
        "batches": daemon.writer.stats.batches,
    }


def _baseline(seconds: float) -> dict[str, float]:
    """Import what the daemon imports, then sleep: the interpreter's own floor."""
    import watcher.daemon
    import watcher.sim
    import watcher.simulation  # imported for its memory, not used

    del watcher
    cpu0, wall0 = _cpu_s(), time.perf_counter()
    time.sleep(seconds)
    return {
        "steady_cpu_s": _cpu_s() - cpu0,
        "steady_wall_s": time.perf_counter() - wall0,
        "rss_kib": _status_kib("VmRSS"),
    }


def child(argv: Sequence[str]) -> None:
    """The measured process: run the daemon (or the baseline), print one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--db", type=Path)
    parser.add_argument("--baseline", action="store_true")
    args = parser.parse_args(argv)
    log_like_production()
    if args.baseline:
        out = _baseline(args.seconds)
    else:
        out = asyncio.run(_run_daemon(args.seconds, args.db))
    out["total_cpu_s"] = _cpu_s()
    out["hwm_kib"] = _status_kib("VmHWM")
    print(json.dumps(out), flush=True)


@dataclass(frozen=True, slots=True)
class Measured:
    figures: dict[str, float]
    wall_s: float


def spawn(args: Sequence[str]) -> Measured:
    """Run ``python -m bench.overhead --child ARGS``; its figures and wall time."""
    root = Path(bench.__file__).resolve().parent.parent
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bench.overhead", "--child", *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"overhead child failed ({done.returncode}): {done.stderr[-2000:]}")
    return Measured(json.loads(done.stdout.strip().splitlines()[-1]), wall)


def _mib(kib: float) -> str:
    return f"{kib / 1024:,.1f}"


def report(daemon: Measured, baseline: Measured) -> None:
    rows = []
    for name, m in (
        (f"xidwatch Daemon, {GPUS} simulated GPUs at {INTERVAL_S:g} s", daemon),
        ("peer: the same imports, then idle", baseline),
    ):
        f = m.figures
        rows.append(
            [
                name,
                f"{f['steady_cpu_s'] / f['steady_wall_s'] * 100:.1f}",
                f"{f['total_cpu_s'] - f['steady_cpu_s']:.2f}",
                _mib(f["hwm_kib"]),
                _mib(f["rss_kib"]),
            ]
        )
    headers = ["process", "CPU % of a core", "CPU s start+stop", "peak RSS MiB", "RSS MiB"]
    print(table(headers, rows))
    d = daemon.figures
    ticks = max(1, int(d["ticks"]))
    print(
        f"CPU % = process CPU time (user + system, all threads) / wall time from ready to "
        f"stop ({d['steady_wall_s']:.1f} s); start+stop = the rest of the process's CPU "
        f"(interpreter, imports, store creation, shutdown; {daemon.wall_s:.1f} s wall in all); "
        "peak RSS = VmHWM at exit; RSS = VmRSS just before stop"
    )
    print(
        f"samples stored {int(d['samples_stored']):,} ({int(d['sample_rows']):,} rows; "
        f"{int(d['ticks']):,} ticks x {int(d['gpus'])} GPUs, {int(d['ticks_skipped'])} ticks "
        f"skipped, {int(d['samples_shed'])} shed) in {int(d['batches']):,} commits; "
        f"CPU per tick of {int(d['gpus'])} GPUs: "
        f"{d['steady_cpu_s'] / ticks * 1000:.1f} ms (whole daemon / ticks)"
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["--child"]:
        child(args[1:])
        return
    parser = argparse.ArgumentParser(prog="python -m bench.overhead")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    # ``python -m bench`` calls main() with its own argv; take only our flag from it.
    seconds = parser.parse_known_args(args)[0].seconds
    print(
        f"overhead: the daemon with {GPUS} simulated GPUs sampled every {INTERVAL_S:g} s, kmsg "
        f"and NVML events on, for {seconds:g} s in a subprocess of its own"
    )
    with tempfile.TemporaryDirectory(prefix="xidwatch-bench-") as tmp:
        daemon = spawn(["--seconds", str(seconds), "--db", str(Path(tmp) / "store.db")])
    baseline = spawn(["--seconds", str(min(seconds, BASELINE_SECONDS)), "--baseline"])
    report(daemon, baseline)


if __name__ == "__main__":
    main()

"""Start-up: wall time of a whole ``xidwatch`` process for the commands people type most.

What is measured: ``python -m xidwatch ARGS`` from exec to exit, ``RUNS`` times per
command, rotating the commands each round so load on the machine falls on all alike:
``--help``, ``explain 79``, and ``xids`` on a small store (the bundled sample capture
replayed, not timed). The peer is ``python -c pass``: the interpreter's own start, the
floor no command can go below. Each figure is the median of the runs with min and max, in
milliseconds, as wall time and as the process's CPU time (user + system: steadier than
wall on a machine other work is loading). ``python -m bench.startup --root DIR`` times
another checkout's ``xidwatch`` (an older commit unpacked there, e.g. ``git archive REV |
tar -x -C DIR``) with this interpreter, for a before/after.

Where the time goes: ``python -X importtime -m xidwatch explain 79``.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import Spread, machine_line, table

RUNS = 10
SAMPLE = Path(__file__).resolve().parent.parent / "watcher" / "kernel" / "data" / "sample-kern.log"


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_ms(argv: list[str], cwd: Path) -> tuple[float, float]:
    """(wall ms, CPU ms) of one whole process."""
    cpu, started = _cpu_s(), time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - started) * 1000, (_cpu_s() - cpu) * 1000


def measure(root: Path, runs: int) -> dict[str, tuple[Spread, Spread]]:
    """(wall, CPU) ms per command of the ``xidwatch`` found in ``root``, and of the peer."""
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="xidwatch-startup-") as tmp:
        db = Path(tmp) / "small.db"
        replay = [python, "-m", "xidwatch", "replay", str(SAMPLE), "--db", str(db)]
        subprocess.run(replay, cwd=root, check=True, capture_output=True)
        commands = {
            "python -c pass (peer)": [python, "-c", "pass"],
            "xidwatch --help": [python, "-m", "xidwatch", "--help"],
            "xidwatch explain 79": [python, "-m", "xidwatch", "explain", "79"],
            "xidwatch xids --db small.db": [python, "-m", "xidwatch", "xids", "--db", str(db)],
        }
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        names = list(commands)
        for r in range(runs):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                times[name].append(_run_ms(commands[name], root))
    return {
        name: (Spread.of([w for w, _ in pairs]), Spread.of([c for _, c in pairs]))
        for name, pairs in times.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.startup")
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args(argv)
    print(f"Start-up: whole-process wall time, median of {args.runs} runs -- {machine_line()}")
    spreads = measure(args.root, args.runs)
    rows = [[name, wall.show(), cpu.show()] for name, (wall, cpu) in spreads.items()]
    print(table(["command", "wall ms [min .. max]", "CPU ms [min .. max]"], rows))


if __name__ == "__main__":
    main()

"""Run every benchmark in ``bench/`` in turn: ``python -m bench``.

A benchmark is any module of this package whose name does not start with ``_``; each has a
``main()`` that prints its figures.
"""

from __future__ import annotations

import importlib
import pkgutil
import time

import bench
from bench._common import machine_line


def benchmark_names() -> list[str]:
    """The benchmark modules of this package, in name order."""
    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name[0] != "_")


def main() -> None:
    print(f"xidwatch benchmarks -- {machine_line()}")
    started = time.perf_counter()
    for name in benchmark_names():
        print()
        importlib.import_module(f"bench.{name}").main()
    print(f"\nall benchmarks: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

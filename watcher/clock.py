"""Host time facts: the boot id and the offset that turns kernel timestamps into wall time."""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["BOOT_ID_PATH", "boot_wall_ms", "now_ms", "read_boot_id", "stable_boot_wall_ms"]

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
PROC_STAT = Path("/proc/stat")


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def boot_wall_ms() -> int:
    """Wall-clock time of boot: add a kernel timestamp (ms since boot) to get wall time."""
    return now_ms() - time.clock_gettime_ns(time.CLOCK_BOOTTIME) // 1_000_000


def stable_boot_wall_ms(stat: Path = PROC_STAT) -> int:
    """Boot time as the kernel states it (``btime`` in /proc/stat, whole seconds).

    The same on every call, unlike :func:`boot_wall_ms` (which moves by a millisecond or so
    between calls): a capture replayed twice dates its lines the same, so its records match.
    Falls back to :func:`boot_wall_ms` where /proc/stat has no ``btime``.
    """
    try:
        for line in stat.read_text().splitlines():
            if line.startswith("btime "):
                return int(line.split()[1]) * 1000
    except (OSError, ValueError):
        pass
    return boot_wall_ms()


def read_boot_id(path: Path = BOOT_ID_PATH) -> str:
    """This boot's id; a fixed stand-in where /proc does not have one (not Linux)."""
    try:
        return path.read_text().strip()
    except OSError:
        return "unknown-boot"

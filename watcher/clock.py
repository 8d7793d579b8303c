"""Host time facts: the boot id and the offset that turns kernel timestamps into wall time."""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["BOOT_ID_PATH", "boot_wall_ms", "now_ms", "read_boot_id"]

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def boot_wall_ms() -> int:
    """Wall-clock time of boot: add a kernel timestamp (ms since boot) to get wall time."""
    return now_ms() - time.clock_gettime_ns(time.CLOCK_BOOTTIME) // 1_000_000


def read_boot_id(path: Path = BOOT_ID_PATH) -> str:
    """This boot's id; a fixed stand-in where /proc does not have one (not Linux)."""
    try:
        return path.read_text().strip()
    except OSError:
        return "unknown-boot"

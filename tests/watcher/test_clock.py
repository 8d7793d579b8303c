"""Host time facts: the boot time replay dates dmesg lines from is the same on every call."""

from __future__ import annotations

from pathlib import Path

from watcher.clock import boot_wall_ms, stable_boot_wall_ms


def test_the_stable_boot_time_is_the_kernels_btime_the_same_every_call(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3\nbtime 1765000000\nprocesses 42\n")
    assert stable_boot_wall_ms(stat) == 1_765_000_000_000
    # On this machine: identical across calls (the computed one moves by a millisecond or so).
    assert stable_boot_wall_ms() == stable_boot_wall_ms()


def test_without_btime_it_falls_back_to_the_computed_boot_time(tmp_path: Path) -> None:
    assert abs(stable_boot_wall_ms(tmp_path / "missing") - boot_wall_ms()) < 1_000

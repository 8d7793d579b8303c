"""Tailing a kernel log file: new lines, rotation, and resuming at the watermark."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from watcher.logfile import FileSource, file_source_key
from watcher.records import LogRecord

LINE = "Nov 24 02:14:07 node kernel: NVRM: Xid (PCI:0000:3b:00): 13, pid={n}, name=a, m\n"


async def _until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not predicate():
            await asyncio.sleep(0.02)


def _source(path: Path, marks: dict[str, int] | None = None, **kw: bool) -> FileSource:
    return FileSource(
        path,
        watermark=(marks or {}).get,
        boot_wall_ms=0,
        now_ms=lambda: 1_800_000_000_000,
        poll_interval_s=0.05,
        **kw,
    )


async def test_new_lines_are_read_and_rotation_is_survived(tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    log.write_text(LINE.format(n=0))  # before start: skipped, like tail -F
    source = _source(log)
    seen: list[LogRecord] = []
    task = asyncio.create_task(source.run(seen.append))
    await asyncio.sleep(0.2)
    with log.open("a") as f:
        f.write(LINE.format(n=1))
    await _until(lambda: len(seen) == 1)
    log.rename(tmp_path / "kern.log.1")  # logrotate: move away, then create anew
    with (tmp_path / "kern.log.1").open("a") as f:
        f.write(LINE.format(n=2))  # written to the old file just before the switch
    log.write_text(LINE.format(n=3))
    await _until(lambda: len(seen) == 3)
    source.stop()
    await asyncio.wait_for(task, 5)
    assert sorted(int(r.text.split("pid=")[1].split(",")[0]) for r in seen) == [1, 2, 3]
    assert source.rotations == 1


async def test_a_restart_resumes_at_the_watermark(tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    log.write_text(LINE.format(n=0) + LINE.format(n=1) + "partial line without newline")
    inode = log.stat().st_ino
    first_line_end = len(LINE.format(n=0).encode())
    source = _source(log, {file_source_key(log, inode): first_line_end})
    seen: list[LogRecord] = []
    task = asyncio.create_task(source.run(seen.append))
    await _until(lambda: len(seen) == 1)
    source.stop()
    await asyncio.wait_for(task, 5)
    assert "pid=1," in seen[0].text
    assert seen[0].cursor is not None
    assert seen[0].cursor.position == first_line_end * 2  # the partial line is not consumed


async def test_from_start_reads_existing_lines_the_first_time(tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    log.write_text(LINE.format(n=0))
    source = _source(log, from_start=True)
    seen: list[LogRecord] = []
    task = asyncio.create_task(source.run(seen.append))
    await _until(lambda: len(seen) == 1)
    source.stop()
    await asyncio.wait_for(task, 5)

"""Tailing a kernel log file: new lines, rotation, and resuming at the watermark."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.waiting import wait_until_async
from watcher.errors import SourceError
from watcher.kernel.logfile import FileSource, file_source_key
from watcher.records import LogRecord

LINE = "Nov 24 02:14:07 node kernel: NVRM: Xid (PCI:0000:3b:00): 13, pid={n}, name=a, m\n"


def _source(path: Path, marks: dict[str, int] | None = None, **kw: bool) -> FileSource:
    return FileSource(
        path,
        watermark=(marks or {}).get,
        boot_wall_ms=0,
        now_ms=lambda: 1_800_000_000_000,
        poll_interval_s=0.05,
        **kw,
    )


async def _started(source: FileSource) -> None:
    """Until the lines already there are handled and the watch is in place."""
    async with asyncio.timeout(10):
        await source.started.wait()


async def test_new_lines_are_read_and_rotation_is_survived(tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    log.write_text(LINE.format(n=0))  # before start: skipped, like tail -F
    source = _source(log)
    seen: list[LogRecord] = []
    task = asyncio.create_task(source.run(seen.append))
    await _started(source)
    with log.open("a") as f:
        f.write(LINE.format(n=1))
    await wait_until_async(lambda: len(seen) == 1, 10)
    log.rename(tmp_path / "kern.log.1")  # logrotate: move away, then create anew
    with (tmp_path / "kern.log.1").open("a") as f:
        f.write(LINE.format(n=2))  # written to the old file just before the switch
    log.write_text(LINE.format(n=3))
    await wait_until_async(lambda: len(seen) == 3, 10)
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
    await wait_until_async(lambda: len(seen) == 1, 10)
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
    await wait_until_async(lambda: len(seen) == 1, 10)
    source.stop()
    await asyncio.wait_for(task, 5)


def _inotify_watches() -> int:
    """How many inotify watches this process holds (every inotify descriptor's ``wd:`` lines)."""
    count = 0
    for fd in os.listdir("/proc/self/fdinfo"):
        try:
            text = Path(f"/proc/self/fdinfo/{fd}").read_text()
        except OSError:
            continue
        count += sum(line.startswith("inotify wd:") for line in text.splitlines())
    return count


async def test_the_parent_directory_is_watched_alone_not_its_subdirectories(
    tmp_path: Path,
) -> None:
    for n in range(60):  # /var/log holds journal/, apt/, pods/, ... (and / holds /proc)
        (tmp_path / f"sub{n}" / "deeper").mkdir(parents=True)
    log = tmp_path / "kern.log"
    log.write_text("")
    before = _inotify_watches()
    source = _source(log)
    seen: list[LogRecord] = []
    task = asyncio.create_task(source.run(seen.append))
    await _started(source)
    with log.open("a") as f:
        f.write(LINE.format(n=1))
    await wait_until_async(lambda: len(seen) == 1, 10)
    watches = _inotify_watches() - before
    source.stop()
    await asyncio.wait_for(task, 5)
    assert 1 <= watches <= 2, watches  # before: one per directory below, 121 here


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "absent.log", "no such file"),
        (lambda d: d / "nodir" / "kern.log", "no directory"),
        (lambda d: d, "is a directory"),
    ],
    ids=["missing-file", "missing-directory", "a-directory"],
)
def test_a_file_that_cannot_be_followed_is_refused_at_start_naming_the_flag(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    path = make(tmp_path)
    with pytest.raises(SourceError, match=message) as e:
        _source(path).check()
    assert str(e.value).startswith(f"--log-file {path}")
    assert not (tmp_path / "nodir").exists()  # nothing is created on the user's disk


def test_a_readable_file_can_be_followed(tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    log.write_text("")
    _source(log).check()

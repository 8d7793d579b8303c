"""Reading capture files: bounded lines, gzip caps and damage, future stamps, read boundaries."""

from __future__ import annotations

import asyncio
import gzip
import tracemalloc
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from watcher.kernel.capture import (
    CHUNK_BYTES,
    CaptureTimeError,
    CaptureTooLargeError,
    open_capture,
)
from watcher.kernel.parser import parse_xid
from watcher.kernel.replay import ReplaySource
from watcher.records import LogRecord

NOW_MS = 1_800_000_000_000
XID = "NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python3, GPU has fallen off the bus."
FALLEN = [
    "NVRM: The NVIDIA GPU 0000:18:00.0",
    "NVRM: (PCI ID: 10de:2901) installed in this system has",
    "NVRM: fallen off the bus and is not responding to commands.",
]


def _replay(path: Path, *, boot_wall_ms: int | None = NOW_MS - 86_400_000) -> list[LogRecord]:
    records: list[LogRecord] = []
    source = ReplaySource(path, boot_wall_ms=boot_wall_ms, now_ms=lambda: NOW_MS)
    asyncio.run(source.run(records.append))
    return records


def _events(records: list[LogRecord]) -> list[int]:
    return [p.xid for r in records if (p := parse_xid(r.text)) is not None]


def test_a_truncated_gzip_gives_the_lines_before_the_damage_and_says_where_it_stopped(
    tmp_path: Path,
) -> None:
    body = "".join(f"[ {n}.000000] {XID}\n" for n in range(1, 2001)).encode()
    whole = gzip.compress(body)
    path = tmp_path / "kern.log.gz"
    path.write_bytes(whole[: len(whole) // 2])

    with capture_logs() as logs:
        records = _replay(path)

    assert 100 < len(records) < 2000
    assert _events(records) == [79] * len(records)
    (warning,) = [e for e in logs if e["event"] == "capture_stopped_early"]
    assert warning["path"] == str(path) and warning["log_level"] == "warning"
    assert warning["after_line"] == len(records)
    assert "truncated" in warning["why"] and "compressed bytes" in warning["why"]


def test_a_gzip_bomb_is_refused_past_the_cap_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "zeros.gz"
    path.write_bytes(gzip.compress(b"\0" * (8 << 20)))

    tracemalloc.start()
    try:
        with pytest.raises(CaptureTooLargeError, match=r"zeros\.gz.*gzip bomb"):  # noqa: SIM117
            with open_capture(path, max_decompressed_bytes=1 << 20) as f:
                while f.read_lines():
                    pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20


def test_a_gzip_of_ordinary_text_passes_the_same_cap(tmp_path: Path) -> None:
    path = tmp_path / "kern.log.gz"
    body = "".join(f"[ {n}.{n:06d}] host noise line number {n * 7919}\n" for n in range(40_000))
    path.write_bytes(gzip.compress(body.encode()))

    with open_capture(path, max_decompressed_bytes=1 << 20) as f:
        lines = sum(len(chunk) for chunk in iter(f.read_lines, []))

    assert lines == 40_000


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_a_10_mb_line_is_cut_while_reading_and_says_so(tmp_path: Path, compressed: bool) -> None:
    line = f"[ 1.000000] {XID} " + "A" * (10 << 20)
    data = f"{line}\n[ 2.000000] {XID}\n".encode()
    path = tmp_path / ("big.log.gz" if compressed else "big.log")
    path.write_bytes(gzip.compress(data) if compressed else data)
    del line, data

    tracemalloc.start()
    try:
        with open_capture(path) as f:
            numbered = [line for chunk in iter(f.read_lines, []) for line in chunk]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert [n for n, _ in numbered] == [1, 2]
    first = numbered[0][1]
    dropped = (10 << 20) + len(f"[ 1.000000] {XID} ") - 4096
    assert first.endswith(f"\u2026 [cut: {dropped} bytes]")
    assert len(first.encode()) < 4200
    assert peak < 1 << 20
    parsed = parse_xid(first)
    assert parsed is not None and parsed.xid == 79 and parsed.pid == 1234


def test_dmesg_stamps_that_would_land_in_the_future_are_refused_before_storing_anything(
    tmp_path: Path,
) -> None:
    path = tmp_path / "dmesg.txt"
    path.write_text(f"[ 10.000000] {XID}\n[86400.100000] {XID}\n")
    records: list[LogRecord] = []
    source = ReplaySource(path, boot_wall_ms=NOW_MS - 3_600_000, now_ms=lambda: NOW_MS)

    with pytest.raises(CaptureTimeError, match=r"line 2 .*future.*--boot-time") as caught:
        asyncio.run(source.run(records.append))

    assert str(path) in str(caught.value)
    assert records == []


def test_dmesg_stamps_with_a_boot_time_that_fits_are_replayed(tmp_path: Path) -> None:
    path = tmp_path / "dmesg.txt"
    path.write_text(f"[86400.100000] {XID}\n")

    (record,) = _replay(path, boot_wall_ms=NOW_MS - 2 * 86_400_000)

    assert record.ts_ms == NOW_MS - 86_400_000 + 100


def test_a_wall_clock_stamp_in_the_future_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "syslog"
    path.write_text(f"2030-01-01T00:00:00+00:00 host kernel: {XID}\n")

    with pytest.raises(CaptureTimeError, match="clock or time zone"):
        _replay(path)


def test_a_message_split_at_the_read_boundary_is_still_one_record(tmp_path: Path) -> None:
    filler = "[ 1.000000] noise noise noise noise noise noise noise noise noise noise\n"
    count = CHUNK_BYTES // len(filler) - 1
    lines = [filler] * count + [f"[ 2.000000] {text}\n" for text in FALLEN]
    path = tmp_path / "dmesg.txt"
    path.write_text("".join(lines))
    assert len(filler) * (count + 1) < CHUNK_BYTES < len(filler) * count + 200

    records = _replay(path)

    assert _events(records) == [79]
    assert len(records) == count + 1
    assert records[-1].cursor is not None and records[-1].cursor.position == count + 3

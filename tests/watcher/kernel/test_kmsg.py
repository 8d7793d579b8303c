"""The /dev/kmsg reader: record format, device semantics (through the double), real device."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest

from tests.conftest import RealKmsgWriter
from tests.waiting import wait_until_async
from watcher.errors import KmsgError, KmsgPermissionError
from watcher.kernel.kmsg import KmsgSource, OsKmsgDevice, format_kmsg_record, parse_kmsg_record
from watcher.records import LogRecord
from watcher.sim.kmsgdev import MemoryKmsgDevice

XID = "NVRM: Xid (PCI:0000:3b:00): 13, pid=7, name=a, Graphics Exception"


def _source(device: MemoryKmsgDevice, **kwargs: object) -> KmsgSource:
    return KmsgSource(
        device.reopen,
        boot_id="b1",
        boot_wall_ms=lambda: 1_000_000,
        now_ms=lambda: 5,
        **kwargs,  # type: ignore[arg-type]
    )


def _drain(source: KmsgSource, device: MemoryKmsgDevice) -> list[LogRecord]:
    out: list[LogRecord] = []
    device = device.reopen()
    while source._drain(device, out.append):
        pass
    return out


def test_record_fields_and_continuation_lines_are_parsed() -> None:
    data = b"4,1227,123456789,c;NVRM: Xid (PCI:0000:01:00): 43, Ch 00000018\n SUBSYSTEM=pci\n"
    record = parse_kmsg_record(data)
    assert record is not None
    assert (record.facility, record.level, record.seq, record.ts_usec) == (0, 4, 1227, 123456789)
    assert record.flags == "c"
    assert record.text == "NVRM: Xid (PCI:0000:01:00): 43, Ch 00000018"


def test_escaped_newlines_are_restored_so_multiline_records_stay_whole() -> None:
    data = b"4,9,1,-;NVRM: The NVIDIA GPU 0000:18:00.0\\x0a(PCI ID: 10de:2901) installed\n"
    record = parse_kmsg_record(data)
    assert record is not None
    assert record.text == "NVRM: The NVIDIA GPU 0000:18:00.0\n(PCI ID: 10de:2901) installed"


@pytest.mark.parametrize(
    "data", [b"", b"no header", b"4,x,1,-;text", b"4,1;text", b"-1,2,3,-;t"], ids=repr
)
def test_malformed_records_parse_to_none(data: bytes) -> None:
    assert parse_kmsg_record(data) is None


def test_format_and_parse_round_trip_any_text() -> None:
    text = "tab\there \\ back\nnewline é"
    record = parse_kmsg_record(format_kmsg_record(5, text, ts_usec=42, flags="c"))
    assert record is not None
    assert (record.seq, record.ts_usec, record.flags, record.text) == (5, 42, "c", text)


def test_double_gives_einval_when_the_buffer_is_smaller_than_the_record() -> None:
    device = MemoryKmsgDevice()
    device.write("x" * 100)
    with pytest.raises(OSError) as info:
        device.read(10)
    assert info.value.errno == errno.EINVAL
    device.dispose()


def test_double_gives_epipe_after_overrun_then_continues_at_the_oldest() -> None:
    device = MemoryKmsgDevice(capacity=3)
    for n in range(5):
        device.write(f"r{n}")
    device._read_seq = 0
    with pytest.raises(OSError) as info:
        device.read(8192)
    assert info.value.errno == errno.EPIPE
    assert b";r2" in device.read(8192)
    device.dispose()


def test_c_flagged_records_are_kept_and_timestamps_become_wall_clock() -> None:
    device = MemoryKmsgDevice()
    device.write(XID, flags="c", ts_usec=2_500_000)
    records = _drain(_source(device), device)
    assert [r.text for r in records] == [XID]
    assert records[0].ts_ms == 1_000_000 + 2_500
    assert records[0].received_ms == 5
    assert records[0].cursor is not None and records[0].cursor.position == 0
    device.dispose()


def test_overrun_counts_lost_records_from_the_sequence_gap_and_continues() -> None:
    device = MemoryKmsgDevice(capacity=4)
    source = _source(device)
    device.write("first")
    assert len(_drain(source, device)) == 1
    for n in range(10):  # seq 1..10; the ring keeps 7..10
        device.write(f"r{n}")
    device._read_seq = 1  # the reader is behind: the next read overruns
    records: list[LogRecord] = []
    while source._drain(device, records.append):
        pass
    assert [r.seq for r in records] == [7, 8, 9, 10]
    assert source.stats.records_lost == 6
    assert source.stats.overruns == 1
    device.dispose()


def test_user_space_records_are_handed_on_with_their_facility_for_the_pipeline_to_judge() -> None:
    device = MemoryKmsgDevice()
    device.write(XID, facility=1)
    records = _drain(_source(device), device)
    assert (records[0].text, records[0].facility) == (XID, 1)
    assert records[0].cursor is not None
    device.dispose()


async def test_without_a_poll_interval_a_kernel_record_wakes_the_source() -> None:
    device = MemoryKmsgDevice()
    source = _source(device)  # no drain timer: readability alone
    got = asyncio.Event()
    task = asyncio.create_task(source.run(lambda record: got.set()))
    await asyncio.sleep(0)
    device.write(XID)
    await asyncio.wait_for(got.wait(), 5)
    source.stop()
    await asyncio.wait_for(task, 5)
    device.dispose()


def test_records_at_or_below_the_restart_watermark_are_skipped() -> None:
    device = MemoryKmsgDevice()
    for n in range(5):
        device.write(f"r{n}")
    records = _drain(_source(device, after_seq=2), device)
    assert [r.seq for r in records] == [3, 4]
    device.dispose()


def test_malformed_records_are_counted_not_fatal() -> None:
    device = MemoryKmsgDevice()
    device._ring[0] = b"garbage without header"
    device._next_seq = 1
    source = _source(device)
    assert _drain(source, device) == []
    assert source.stats.records_malformed == 1
    device.dispose()


class _FailingDevice:
    def __init__(self, code: int) -> None:
        self._r, self._w = os.pipe()
        self._code = code

    def fileno(self) -> int:
        return self._r

    def read(self, size: int) -> bytes:
        raise OSError(self._code, os.strerror(self._code))

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


@pytest.mark.parametrize(
    ("code", "error", "words"),
    [
        (errno.EINVAL, KmsgError, "larger than the read buffer"),
        (errno.EPERM, KmsgPermissionError, "CAP_SYSLOG"),
        (errno.EIO, KmsgError, "reading /dev/kmsg failed"),
    ],
    ids=["einval", "eperm", "eio"],
)
async def test_unrecoverable_read_errors_stop_the_source_with_a_clear_error(
    code: int, error: type[Exception], words: str
) -> None:
    source = KmsgSource(
        lambda: _FailingDevice(code), boot_id="b", boot_wall_ms=lambda: 0, now_ms=lambda: 0
    )
    with pytest.raises(error, match=words):
        await asyncio.wait_for(source.run(lambda r: None), 5)


def test_opening_without_privilege_names_cap_syslog(monkeypatch: pytest.MonkeyPatch) -> None:
    # Fake: root can open anything, and an unprivileged child cannot reach this
    # interpreter (it lives under /root), so the kernel's EACCES is stood in for here.
    def refuse(*args: object) -> int:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(KmsgPermissionError, match="CAP_SYSLOG"):
        OsKmsgDevice(Path("/dev/kmsg"))


def test_a_missing_device_says_to_mount_it(tmp_path: Path) -> None:
    with pytest.raises(KmsgError, match="mount the host's /dev/kmsg"):
        OsKmsgDevice(tmp_path / "nope")


async def test_run_delivers_records_written_while_running_and_stops_cleanly() -> None:
    device = MemoryKmsgDevice()
    source = _source(device, poll_interval_s=0.01)
    seen: list[LogRecord] = []
    got = asyncio.Event()

    def sink(record: LogRecord) -> None:
        seen.append(record)
        got.set()

    task = asyncio.create_task(source.run(sink))
    await asyncio.sleep(0)
    device.write(XID)
    await asyncio.wait_for(got.wait(), 5)
    source.stop()
    await asyncio.wait_for(task, 5)
    assert [r.text for r in seen] == [XID]
    assert device.closed
    device.dispose()


@pytest.mark.root
async def test_real_kmsg_record_written_by_root_arrives(real_kmsg: RealKmsgWriter) -> None:
    line = real_kmsg.xid_line(13, 1)
    source = KmsgSource(
        OsKmsgDevice,
        boot_id="real",
        boot_wall_ms=lambda: 0,
        now_ms=lambda: 0,
        poll_interval_s=0.02,
    )
    seen = asyncio.Event()
    texts: list[str] = []

    def sink(record: LogRecord) -> None:
        if real_kmsg.tag in record.text:
            texts.append(record.text)
            seen.set()

    task = asyncio.create_task(source.run(sink))
    real_kmsg.write(line)
    real_kmsg.write("xidwatch test flush")  # makes the line before it readable
    await asyncio.wait_for(seen.wait(), 10)
    source.stop()
    await asyncio.wait_for(task, 5)
    assert texts == [line]
    assert source.stats.records_read > 0


async def test_a_backlog_larger_than_one_drain_is_delivered_without_starving_the_loop() -> None:
    device = MemoryKmsgDevice(capacity=5000)
    for n in range(3500):
        device.write(f"r{n}")
    source = _source(device, poll_interval_s=10)
    seen: list[LogRecord] = []
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    tick_task = asyncio.create_task(ticker())
    task = asyncio.create_task(source.run(seen.append))
    await wait_until_async(lambda: len(seen) >= 3500, 10)
    source.stop()
    await asyncio.wait_for(task, 5)
    tick_task.cancel()
    assert [r.seq for r in seen] == list(range(3500))
    assert ticks >= 3  # the loop ran other tasks between drains of at most 1000 records
    device.dispose()

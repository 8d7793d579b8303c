"""Reading /dev/kmsg: one record per read, on the event loop, losing nothing silently.

Record format (Documentation/ABI/testing/dev-kmsg): ``PRI,SEQ,TS_USEC,FLAGS[,...];TEXT``
then optional dictionary lines that begin with a space. Non-printable bytes in TEXT are
escaped as ``\\xNN``; :func:`parse_kmsg_record` undoes that so multi-line records keep
their newlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from store.records import SourceCursor
from watcher.errors import KmsgError, KmsgPermissionError
from watcher.records import LogRecord

__all__ = [
    "KMSG_PATH",
    "KmsgDevice",
    "KmsgRecord",
    "KmsgSource",
    "KmsgStats",
    "OsKmsgDevice",
    "format_kmsg_record",
    "kmsg_source_key",
    "parse_kmsg_record",
]

log = structlog.get_logger("watcher.kernel.kmsg")

KMSG_PATH = Path("/dev/kmsg")
READ_SIZE = 8192
DRAIN_MAX = 1000
_ESCAPE_RE = re.compile(r"\\x([0-9a-fA-F]{2})")


@dataclass(frozen=True, slots=True)
class KmsgRecord:
    """One parsed kmsg record: syslog facility and level, sequence, µs since boot."""

    facility: int
    level: int
    seq: int
    ts_usec: int
    flags: str
    text: str


def parse_kmsg_record(data: bytes) -> KmsgRecord | None:
    """Parse one record as read from /dev/kmsg; None if it is not in that format."""
    header, sep, body = data.partition(b";")
    fields = header.split(b",")
    if not sep or len(fields) < 4:
        return None
    try:
        pri, seq, ts_usec = int(fields[0]), int(fields[1]), int(fields[2])
    except ValueError:
        return None
    if pri < 0 or seq < 0 or ts_usec < 0:
        return None
    text = body.split(b"\n", 1)[0].decode("utf-8", "replace")
    if "\\x" in text:
        text = _ESCAPE_RE.sub(lambda m: chr(int(m[1], 16)), text)
    return KmsgRecord(pri >> 3, pri & 7, seq, ts_usec, fields[3].decode("ascii", "replace"), text)


def format_kmsg_record(
    seq: int, text: str, *, ts_usec: int = 0, facility: int = 0, level: int = 4, flags: str = "-"
) -> bytes:
    """Encode a record the way the kernel presents it (used by the device double)."""
    escaped = text
    if not text.isprintable() or "\\" in text:
        escaped = "".join(c if c.isprintable() and c != "\\" else f"\\x{ord(c):02x}" for c in text)
    return f"{facility << 3 | level},{seq},{ts_usec},{flags};{escaped}\n".encode()


def kmsg_source_key(boot_id: str) -> str:
    """The watermark key of the kmsg stream of one boot."""
    return SourceCursor.kmsg_key(boot_id)


class KmsgDevice(Protocol):
    """What :class:`KmsgSource` needs of /dev/kmsg: a pollable fd and one record per read."""

    def fileno(self) -> int: ...

    def read(self, size: int) -> bytes:
        """One record; BlockingIOError when none is ready, OSError(EPIPE) after overrun."""
        ...

    def close(self) -> None: ...


class OsKmsgDevice:
    """The real /dev/kmsg, opened read-only and non-blocking at its first record."""

    def __init__(self, path: Path = KMSG_PATH) -> None:
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except PermissionError as e:
            raise KmsgPermissionError(
                f"cannot open {path}: permission denied. The daemon needs CAP_SYSLOG "
                "(kernel.dmesg_restrict=1) or root; in a container the runtime's device "
                "cgroup also refuses /dev/kmsg unless the container is privileged (see "
                "deploy/base), or read /var/log/kern.log instead (--no-kmsg --log-file)"
            ) from e
        except FileNotFoundError as e:
            raise KmsgError(f"{path} does not exist: mount the host's /dev/kmsg") from e

    def fileno(self) -> int:
        return self._fd

    def read(self, size: int) -> bytes:
        return os.read(self._fd, size)

    def close(self) -> None:
        os.close(self._fd)


@dataclass(slots=True)
class KmsgStats:
    """Counters for /metrics: records read, lost and malformed."""

    records_read: int = 0
    records_lost: int = 0
    records_malformed: int = 0
    overruns: int = 0


class KmsgSource:
    """Reads /dev/kmsg on the event loop and hands each record, with its facility, to ``sink``.

    What a record is (an XID, or only a checkpoint) is the pipeline's to decide. The kernel
    wakes pollers for its own records, but not for records written from user space until
    its next own message: where those can be accepted (``--kmsg-any-facility``,
    ``--accept-injected``) pass ``poll_interval_s`` and the fd is also drained on that
    timer. Without it the source sleeps until the kernel writes.
    """

    name = "kmsg"

    def __init__(
        self,
        open_device: Callable[[], KmsgDevice] = OsKmsgDevice,
        *,
        boot_id: str,
        boot_wall_ms: Callable[[], int],
        now_ms: Callable[[], int],
        after_seq: int | None = None,
        poll_interval_s: float | None = None,
    ) -> None:
        self.stats = KmsgStats()
        self._open_device = open_device
        self._source_key = kmsg_source_key(boot_id)
        self._boot_wall_ms = boot_wall_ms
        self._now_ms = now_ms
        self._last_seq = after_seq
        self._poll_interval_s = poll_interval_s
        self._stopped = asyncio.Event()
        self._failure: BaseException | None = None

    async def run(self, sink: Callable[[LogRecord], None]) -> None:
        """Deliver records until :meth:`stop`; raises KmsgError on an unrecoverable read."""
        device = self._open_device()
        loop = asyncio.get_running_loop()
        loop.add_reader(device.fileno(), self._on_readable, device, sink)
        log.info("kmsg_reading", after_seq=self._last_seq, poll_s=self._poll_interval_s)
        try:
            while not self._stopped.is_set() and self._failure is None:
                self._on_readable(device, sink)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), self._poll_interval_s)
            while self._drain(device, sink):
                pass
        finally:
            loop.remove_reader(device.fileno())
            device.close()
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        self._stopped.set()

    def _on_readable(self, device: KmsgDevice, sink: Callable[[LogRecord], None]) -> None:
        """Drain on the loop; a backlog continues in a later callback so the loop stays live."""
        if self._drain(device, sink):
            asyncio.get_running_loop().call_soon(self._on_readable, device, sink)

    def _drain(self, device: KmsgDevice, sink: Callable[[LogRecord], None]) -> bool:
        """Read what is ready, at most ``DRAIN_MAX`` records; True if more may be waiting."""
        if self._failure is not None:
            return False
        for _ in range(DRAIN_MAX):
            try:
                data = device.read(READ_SIZE)
            except BlockingIOError:
                return False
            except OSError as e:
                if e.errno == errno.EPIPE:
                    self.stats.overruns += 1
                    continue  # the gap in sequence numbers says how many were lost
                self._failure = _read_error(e)
                self._stopped.set()
                return False
            if not data:
                return False
            self._deliver(data, sink)
        return True

    def _deliver(self, data: bytes, sink: Callable[[LogRecord], None]) -> None:
        record = parse_kmsg_record(data)
        if record is None:
            self.stats.records_malformed += 1
            return
        last = self._last_seq
        if last is not None and record.seq <= last:
            return  # already stored before a restart
        if last is not None and record.seq > last + 1:
            lost = record.seq - last - 1
            self.stats.records_lost += lost
            log.warning("kmsg_records_lost", lost=lost, after_seq=last, next_seq=record.seq)
        self._last_seq = record.seq
        self.stats.records_read += 1
        cursor = SourceCursor(self._source_key, record.seq)
        sink(
            LogRecord(
                text=record.text,
                source="kmsg",
                received_ms=self._now_ms(),
                ts_ms=self._boot_wall_ms() + record.ts_usec // 1000,
                facility=record.facility,
                seq=record.seq,
                cursor=cursor,
            )
        )


def _read_error(e: OSError) -> KmsgError:
    if e.errno == errno.EINVAL:
        return KmsgError(
            f"/dev/kmsg refused a {READ_SIZE}-byte read (EINVAL): a record is larger than the "
            "read buffer; this is a bug in xidwatch, please report it with `uname -r`"
        )
    if e.errno in (errno.EPERM, errno.EACCES):
        return KmsgPermissionError(
            "reading /dev/kmsg was refused: the daemon needs CAP_SYSLOG (or root) when "
            "kernel.dmesg_restrict=1"
        )
    return KmsgError(f"reading /dev/kmsg failed: {e}")

"""An in-memory /dev/kmsg for tests, benchmarks and the demo.

It keeps the device's semantics that the reader depends on: one record per read, EINVAL
when the buffer is smaller than the record, EPIPE once the ring has overwritten records
the reader had not reached (the next read continues at the oldest record), and a pollable
file descriptor. The real device can only be written at ~10 records per 5 s from user
space, so storms and latency curves run through this double.
"""

from __future__ import annotations

import contextlib
import errno
import os

from watcher.kernel.kmsg import format_kmsg_record

__all__ = ["MemoryKmsgDevice"]


class MemoryKmsgDevice:
    """A ring of ``capacity`` records with a single reader position."""

    def __init__(self, capacity: int = 4096, *, first_seq: int = 0) -> None:
        self._capacity = capacity
        self._ring: dict[int, bytes] = {}
        self._first_seq = first_seq
        self._next_seq = first_seq
        self._read_seq = first_seq
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.closed = False

    def write(
        self, text: str, *, ts_usec: int = 0, facility: int = 0, level: int = 4, flags: str = "-"
    ) -> int:
        """Append a record as the kernel would; returns its sequence number."""
        seq = self._next_seq
        record = format_kmsg_record(
            seq, text, ts_usec=ts_usec, facility=facility, level=level, flags=flags
        )
        self._ring[seq] = record
        self._ring.pop(seq - self._capacity, None)
        self._next_seq += 1
        with contextlib.suppress(BlockingIOError):  # the pipe is full of wake-ups already
            os.write(self._wake_w, b"\0")
        return seq

    def reopen(self) -> MemoryKmsgDevice:
        """A fresh reader at the first record still in the ring, like a new open()."""
        self._read_seq = self._oldest()
        self.closed = False
        return self

    def _oldest(self) -> int:
        return max(self._first_seq, self._next_seq - self._capacity)

    def fileno(self) -> int:
        return self._wake_r

    def read(self, size: int) -> bytes:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 65536)
        if self._read_seq >= self._next_seq:
            raise BlockingIOError(errno.EAGAIN, "no record")
        if self._read_seq < self._oldest():
            self._read_seq = self._oldest()
            raise OSError(errno.EPIPE, "records were overwritten")
        record = self._ring[self._read_seq]
        if len(record) > size:
            raise OSError(errno.EINVAL, "buffer smaller than the record")
        self._read_seq += 1
        return record

    def close(self) -> None:
        self.closed = True

    def dispose(self) -> None:
        """Release the wake-up pipe (the device itself outlives reader close/reopen)."""
        os.close(self._wake_r)
        os.close(self._wake_w)

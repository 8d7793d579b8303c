"""Replaying a saved kernel log capture (dmesg, dmesg -T, raw kmsg, syslog; .gz too).

For demos, incident re-analysis and tests. Replaying the same capture twice stores
nothing the second time: the watermark key is the capture's content digest and the
position its line number.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path

from watcher.errors import SourceError
from watcher.kernel.capture import (
    CHUNK_BYTES,
    MAX_DECOMPRESSED_BYTES,
    CaptureFeeder,
    CaptureFile,
    check_capture_times,
    open_capture,
)
from watcher.records import LogRecord

__all__ = ["ReplaySource", "capture_digest"]

_CHUNK_LINES = 2000


def capture_digest(path: Path, max_decompressed_bytes: int = MAX_DECOMPRESSED_BYTES) -> str:
    """A short content digest naming the capture, whatever its file name."""
    digest = hashlib.sha256()
    with _open(path, max_decompressed_bytes) as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()[:20]


class ReplaySource:
    """Feeds every line of one capture to ``sink``, then returns.

    Monotonic timestamps (dmesg, raw kmsg) become wall time with ``boot_wall_ms``: this
    machine's boot by default, or the capture's own boot when the caller knows it. A
    capture whose stamps would then lie in the future is refused before anything is stored
    (CaptureTimeError). Memory stays bounded: lines are cut (watcher.kernel.capture), a gzip past
    ``max_decompressed_bytes`` is refused, a truncated one gives what it held.
    """

    name = "replay"

    def __init__(
        self,
        path: Path,
        *,
        boot_wall_ms: int | None,
        now_ms: Callable[[], int],
        max_decompressed_bytes: int = MAX_DECOMPRESSED_BYTES,
        chunk_bytes: int = CHUNK_BYTES,
    ):
        self.path = path
        self.lines_read = 0
        self._boot_wall_ms = boot_wall_ms
        self._now_ms = now_ms
        self._max_decompressed = max_decompressed_bytes
        self._chunk_bytes = chunk_bytes

    def stop(self) -> None:
        """A replay ends by itself; cancelling its task stops it early."""

    async def run(self, sink: Callable[[LogRecord], None]) -> None:
        try:
            digest = await asyncio.to_thread(capture_digest, self.path, self._max_decompressed)
            key = f"replay:{digest}"
            await asyncio.to_thread(
                check_capture_times,
                self.path,
                boot_wall_ms=self._boot_wall_ms,
                now_ms=self._now_ms(),
                max_decompressed_bytes=self._max_decompressed,
            )
            feeder = CaptureFeeder(
                source=self.name, source_key=key, boot_wall_ms=self._boot_wall_ms, sink=sink
            )
            with _open(self.path, self._max_decompressed) as f:
                while chunk := await asyncio.to_thread(f.read_lines, self._chunk_bytes):
                    self.lines_read += feeder.feed(chunk, now_ms=self._now_ms())
                    await asyncio.sleep(0)
                self.lines_read += feeder.finish(now_ms=self._now_ms())
        except OSError as e:
            raise SourceError(f"cannot read capture {self.path}: {e.strerror or e}") from e


def _open(path: Path, max_decompressed_bytes: int) -> CaptureFile:
    return open_capture(path, max_decompressed_bytes=max_decompressed_bytes)

"""Replaying a saved kernel log capture (dmesg, dmesg -T, raw kmsg, syslog; .gz too).

For demos, incident re-analysis and tests. Replaying the same capture twice stores
nothing the second time: the watermark key is the capture's content digest and the
position its line number.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

from watcher.capture import feed_lines
from watcher.errors import SourceError
from watcher.records import LogRecord

__all__ = ["ReplaySource", "capture_digest"]

_CHUNK_LINES = 2000


def capture_digest(path: Path) -> str:
    """A short content digest naming the capture, whatever its file name."""
    digest = hashlib.sha256()
    with _open(path) as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()[:20]


class ReplaySource:
    """Feeds every line of one capture to ``sink``, then returns.

    Monotonic timestamps (dmesg, raw kmsg) become wall time with ``boot_wall_ms``: this
    machine's boot by default, or the capture's own boot when the caller knows it.
    """

    name = "replay"

    def __init__(self, path: Path, *, boot_wall_ms: int | None, now_ms: Callable[[], int]):
        self.path = path
        self.lines_read = 0
        self._boot_wall_ms = boot_wall_ms
        self._now_ms = now_ms

    def stop(self) -> None:
        """A replay ends by itself; cancelling its task stops it early."""

    async def run(self, sink: Callable[[LogRecord], None]) -> None:
        try:
            key = f"replay:{await asyncio.to_thread(capture_digest, self.path)}"
            with _open(self.path) as f:
                position = 0
                while chunk := await asyncio.to_thread(f.readlines, 1 << 20):
                    numbered = [
                        (position + n, raw.decode("utf-8", "replace"))
                        for n, raw in enumerate(chunk, start=1)
                    ]
                    position += len(chunk)
                    self.lines_read += feed_lines(
                        numbered,
                        source=self.name,
                        source_key=key,
                        boot_wall_ms=self._boot_wall_ms,
                        now_ms=self._now_ms(),
                        sink=sink,
                    )
                    await asyncio.sleep(0)
        except OSError as e:
            raise SourceError(f"cannot read capture {self.path}: {e.strerror or e}") from e


def _open(path: Path) -> BinaryIO:
    if path.suffix == ".gz":
        return cast(BinaryIO, gzip.open(path, "rb"))
    return path.open("rb")

"""Tailing a kernel log file (kern.log, syslog) with watchfiles, surviving rotation.

Exactly-once across restarts works as for kmsg: the watermark key names the file by path
and inode, the position is the byte offset after the last line handed on. A rotated file
(new inode, or shorter than the offset) is finished from the old descriptor, then the new
file is read from its start.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import structlog

from watcher.dirwatch import watch_directory
from watcher.errors import SourceError
from watcher.kernel.capture import feed_lines
from watcher.records import LogRecord

__all__ = ["FileSource", "file_source_key"]

log = structlog.get_logger("watcher.kernel.logfile")


def file_source_key(path: Path, inode: int) -> str:
    return f"file:{path}:{inode}"


class FileSource:
    """Follows one log file like ``tail -F``; new files are read from their start.

    ``started`` is set once the lines already there are handled and the watch is in place:
    from then on every appended line is seen.
    """

    name = "file"

    def __init__(
        self,
        path: Path,
        *,
        watermark: Callable[[str], int | None],
        boot_wall_ms: int | None,
        now_ms: Callable[[], int],
        from_start: bool = False,
        poll_interval_s: float = 1.0,
    ) -> None:
        self.path = path.absolute()  # watchfiles reports absolute paths
        self.lines_read = 0
        self.rotations = 0
        self._watermark = watermark
        self._boot_wall_ms = boot_wall_ms
        self._now_ms = now_ms
        self._from_start = from_start
        self._poll_interval_s = poll_interval_s
        self.started = asyncio.Event()
        self._stopped = asyncio.Event()
        self._file: BinaryIO | None = None
        self._inode = 0
        self._offset = 0
        self._partial = b""

    def stop(self) -> None:
        self._stopped.set()

    def check(self) -> None:
        """Raise :class:`SourceError` unless the file can be followed (called at start-up).

        The file must exist and be readable when the daemon starts (a typo would otherwise
        watch nothing, silently, for good); later it may be rotated away and back.
        """
        where = f"--log-file {self.path}"
        if not self.path.parent.is_dir():
            raise SourceError(f"{where}: no directory {self.path.parent}")
        if self.path.is_dir():
            raise SourceError(f"{where}: is a directory; name the log file itself")
        try:
            with self.path.open("rb"):
                pass
        except FileNotFoundError:
            raise SourceError(
                f"{where}: no such file; check the path (e.g. /var/log/kern.log, "
                "/var/log/messages), or drop the flag"
            ) from None
        except OSError as e:
            raise SourceError(f"{where}: cannot read it: {e.strerror or e}") from e

    async def run(self, sink: Callable[[LogRecord], None]) -> None:
        self._open(first=True)
        self._read(sink)
        try:
            async for _ in watch_directory(
                self.path.parent,  # the directory, to see the file rotated away and back
                stop=self._stopped,
                on_watching=self._watching,
                watch_filter=lambda _change, changed: Path(changed) == self.path,
                rust_timeout=int(self._poll_interval_s * 1000),
                yield_on_timeout=True,
                debounce=50,
                step=20,
            ):
                self._check_rotation(sink)
                self._read(sink)
            # Stopped: take what was written since the last wake-up, so a SIGTERM does not
            # leave lines already in the file for the next start.
            self._check_rotation(sink)
            self._read(sink)
        finally:
            if self._file is not None:
                self._file.close()

    def _watching(self) -> None:
        log.info("logfile_following", path=str(self.path), offset=self._offset)
        self.started.set()

    def _open(self, *, first: bool) -> None:
        try:
            f = self.path.open("rb")
        except FileNotFoundError:
            self._file = None
            return
        st = os.fstat(f.fileno())
        self._file, self._inode, self._partial = f, st.st_ino, b""
        mark = self._watermark(file_source_key(self.path, st.st_ino))
        if mark is not None and mark <= st.st_size:
            self._offset = mark
        elif first and not self._from_start and mark is None:
            self._offset = st.st_size
        else:
            self._offset = 0
        f.seek(self._offset)

    def _check_rotation(self, sink: Callable[[LogRecord], None]) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return  # rotated away; the new file will appear
        if self._file is not None and st.st_ino == self._inode and st.st_size >= self._offset:
            return
        if self._file is not None:
            self._read(sink)  # finish what the old file still holds
            self._file.close()
            self.rotations += 1
            log.info("logfile_rotated", path=str(self.path))
        self._file = None
        self._open(first=False)

    def _read(self, sink: Callable[[LogRecord], None]) -> None:
        if self._file is None:
            self._open(first=False)
            if self._file is None:
                return
        data = self._file.read()
        if not data:
            return
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        numbered = []
        for raw in lines:
            self._offset += len(raw) + 1
            numbered.append((self._offset, raw.decode("utf-8", "replace")))
        self.lines_read += feed_lines(
            numbered,
            source=self.name,
            source_key=file_source_key(self.path, self._inode),
            boot_wall_ms=self._boot_wall_ms,
            now_ms=self._now_ms(),
            sink=sink,
        )

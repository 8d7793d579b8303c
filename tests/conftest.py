"""Shared fixtures: a fresh store path, and a polite writer for the real /dev/kmsg."""

from __future__ import annotations

import os
import time
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import settings

KMSG = Path("/dev/kmsg")

# No per-example deadline: on a busy machine (the suite runs on several workers) a slow
# example is the machine, not the code; tests never judge wall-clock time.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "xidwatch.db"


class RealKmsgWriter:
    """Writes uniquely tagged records to the real /dev/kmsg within its rate limit.

    User-space writes are rate-limited (10 per 5 s by default) and the last record of a
    burst only becomes readable after a later one, so each write is followed by the
    caller's own flush record only when asked, and writes are paced session-wide.
    """

    _history: ClassVar[deque[float]] = deque(maxlen=8)

    def __init__(self) -> None:
        self.tag = f"xwt{uuid.uuid4().hex[:10]}"
        self._fd = os.open(KMSG, os.O_WRONLY)

    def write(self, text: str) -> None:
        if len(self._history) == self._history.maxlen:
            wait = self._history[0] + 5.5 - time.monotonic()
            if wait > 0:  # the kernel's limit is a clock: only its window passing helps
                time.sleep(wait)  # sleep-under-test: pacing under /dev/kmsg's rate limit
        os.write(self._fd, f"<4>{text}\n".encode())
        self._history.append(time.monotonic())

    def xid_line(self, code: int, n: int) -> str:
        """An XID line carrying this writer's tag as the process name, on a fake GPU."""
        return f"NVRM: Xid (PCI:0000:e7:00): {code}, pid={1000 + n}, name={self.tag}, test {n}"

    def close(self) -> None:
        os.close(self._fd)


@pytest.fixture
def real_kmsg() -> Iterator[RealKmsgWriter]:
    if os.geteuid() != 0 or not os.access(KMSG, os.W_OK):
        pytest.skip("needs root and a writable /dev/kmsg (the real device is exercised as root)")
    writer = RealKmsgWriter()
    yield writer
    writer.close()

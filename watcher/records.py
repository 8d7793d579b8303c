"""Record types inside the watcher: one kernel log record as a source read it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from store.records import SourceCursor

__all__ = ["KERNEL_FACILITY", "LogRecord", "LogSource", "Service"]

KERNEL_FACILITY = 0


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One kernel log record, whichever source it came from.

    ``text`` is the message with kmsg escapes undone (a multi-line record keeps its
    newlines). ``ts_ms`` is the wall-clock time the kernel logged it when that is known,
    else None; ``received_ms`` is when xidwatch read it.
    """

    text: str
    source: str
    received_ms: int
    ts_ms: int | None = None
    facility: int = KERNEL_FACILITY
    boot_id: str | None = None
    seq: int | None = None
    cursor: SourceCursor | None = None


class LogSource(Protocol):
    """A source of kernel log records: kmsg, a tailed file, a replayed capture."""

    name: str

    async def run(self, sink: Callable[[LogRecord], None]) -> None:
        """Hand every record to ``sink`` until stopped (or, for a capture, until its end)."""
        ...

    def stop(self) -> None:
        """Ask :meth:`run` to return soon; safe to call more than once."""
        ...


class Service(Protocol):
    """A long-running part the daemon starts and stops: the sampler, the HTTP port."""

    name: str

    async def run(self) -> None:
        """Serve until :meth:`stop` is called."""
        ...

    def stop(self) -> None:
        """Ask :meth:`run` to return soon; safe to call more than once."""
        ...

"""Record types inside the watcher: one kernel log record as a source read it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from store.records import GpuInfo, GpuPod, PodRef, SourceCursor

__all__ = ["KERNEL_FACILITY", "LogRecord", "LogSource", "PodLookup", "Service"]

KERNEL_FACILITY = 0


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One kernel log record, whichever source it came from.

    ``text`` is the message with kmsg escapes undone (a multi-line record keeps its
    newlines). ``ts_ms`` is the wall-clock time the kernel logged it when that is known,
    else None; ``received_ms`` is when xidwatch read it. ``cursor`` is its position in its
    source (for kmsg: boot id and sequence number); ``seq`` the kernel's sequence number
    where the source shows one.
    """

    text: str
    source: str
    received_ms: int
    ts_ms: int | None = None
    facility: int = KERNEL_FACILITY
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


class PodLookup(Protocol):
    """Kubernetes attribution as the sampler and the pipeline use it (a PodDirectory).

    Both calls are synchronous and cheap (a cached pod list and a ``/proc`` read), safe from
    the sampler's worker thread.
    """

    def pod_for_pid(self, pid: int) -> PodRef | None:
        """The pod a host pid runs in, or None (not in a container, gone and never seen)."""
        ...

    def gpu_pods(self, gpus: Sequence[GpuInfo]) -> list[GpuPod]:
        """Pods holding GPUs by annotation or by requesting every GPU on the node."""
        ...

"""Record types that cross the store boundary: what is written and what is read back.

Frozen dataclasses with units in field names; timestamps are integer milliseconds since
the epoch, UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Checkpoint",
    "EventKind",
    "SourceCursor",
    "StoredXid",
    "XidEvent",
    "XidPage",
    "XidSummary",
    "XidSummaryRow",
]

EventKind = Literal["xid", "sxid"]


@dataclass(frozen=True, slots=True)
class SourceCursor:
    """Where a record sits in its source, for exactly-once ingestion.

    ``source_key`` names one stream that only moves forward (``kmsg:<boot_id>``, a replayed
    file's digest, a tailed file's inode); ``position`` grows along it (kmsg sequence
    number, line number, byte offset). The writer stores the highest position committed per
    key in the same transaction as the events, and skips anything at or below it.
    """

    source_key: str
    position: int


@dataclass(frozen=True, slots=True)
class XidEvent:
    """One XID or SXid as the kernel (or NVML) reported it, ready to be stored."""

    ts_ms: int
    received_ms: int
    kind: EventKind
    xid: int
    message: str
    raw: str
    source: str
    action: str
    node: str = ""
    pci_bus_id: str | None = None
    gpu_uuid: str | None = None
    pid: int | None = None
    process: str | None = None
    mig_gi: int | None = None
    mig_ci: int | None = None
    boot_id: str | None = None
    seq: int | None = None
    cursor: SourceCursor | None = None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A position that was read and held no event; lets the watermark move past noise."""

    cursor: SourceCursor


@dataclass(frozen=True, slots=True)
class StoredXid:
    """A row of ``xid_events`` as read back.

    ``count`` is 1 for an individual event. A burst row (``burst`` true) stands for
    ``count`` events of the same kind, code and GPU folded together during a flood, seen
    first at ``ts_ms`` and last at ``last_ts_ms``; its pid, process and message are those of
    the last folded event.
    """

    id: int
    ts_ms: int
    last_ts_ms: int
    received_ms: int
    count: int
    burst: bool
    node: str
    kind: EventKind
    xid: int
    pci_bus_id: str | None
    gpu_uuid: str | None
    mig_gi: int | None
    mig_ci: int | None
    pid: int | None
    process: str | None
    message: str
    raw: str
    source: str
    action: str
    boot_id: str | None
    seq: int | None


@dataclass(frozen=True, slots=True)
class XidPage:
    """One page of a listing, newest first; ``next_cursor`` is None on the last page."""

    events: tuple[StoredXid, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class XidSummaryRow:
    """Exact counts for one (kind, code, GPU), bursts included."""

    kind: EventKind
    xid: int
    pci_bus_id: str | None
    action: str
    count: int
    rows: int
    first_ts_ms: int
    last_ts_ms: int


@dataclass(frozen=True, slots=True)
class XidSummary:
    """Counts over a window: per (kind, code, GPU) rows and the grand total."""

    since_ms: int | None
    until_ms: int | None
    total: int
    rows: tuple[XidSummaryRow, ...]

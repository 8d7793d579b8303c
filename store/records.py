"""Record types that cross the store boundary: what is written and what is read back.

Frozen dataclasses with units in field names; timestamps are integer milliseconds since
the epoch, UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Bucket",
    "Checkpoint",
    "EventKind",
    "GpuInfo",
    "GpuPod",
    "GpuProcess",
    "GpuSample",
    "GpuState",
    "GpuStateEvent",
    "InventoryGpu",
    "PodRef",
    "SampleBatch",
    "Series",
    "SourceCursor",
    "StoredXid",
    "XidEvent",
    "XidPage",
    "XidSummary",
    "XidSummaryRow",
]

EventKind = Literal["xid", "sxid"]
GpuState = Literal["lost", "recovered"]
_KMSG_PREFIX = "kmsg:"


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

    @staticmethod
    def kmsg_key(boot_id: str) -> str:
        """The key of the /dev/kmsg stream of one boot: its positions are sequence numbers."""
        return f"{_KMSG_PREFIX}{boot_id}"

    @property
    def kmsg_record(self) -> tuple[str, int] | None:
        """(boot id, sequence number) where this is a /dev/kmsg position, else None."""
        if not self.source_key.startswith(_KMSG_PREFIX):
            return None
        return self.source_key[len(_KMSG_PREFIX) :], self.position


@dataclass(frozen=True, slots=True)
class PodRef:
    """The Kubernetes pod (and container, when known) a GPU process or an XID belongs to."""

    namespace: str
    pod: str
    container: str | None = None
    uid: str | None = None


@dataclass(frozen=True, slots=True)
class XidEvent:
    """One XID or SXid as the kernel (or NVML) reported it, ready to be stored.

    Its position is its ``cursor``: a /dev/kmsg one also names the kernel record (boot id
    and sequence number, :attr:`kernel_record`). ``capture_seq`` is the sequence number a
    saved capture printed beside a line, part of that record's identity. ``injected`` marks
    a synthetic line written by ``xidwatch inject``, not the driver.
    """

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
    cursor: SourceCursor | None = None
    capture_seq: int | None = None
    injected: bool = False
    pod: PodRef | None = None

    @property
    def kernel_record(self) -> tuple[str | None, int | None]:
        """(boot id, sequence number) of the kernel record, as far as they are known."""
        kmsg = self.cursor.kmsg_record if self.cursor is not None else None
        return kmsg if kmsg is not None else (None, self.capture_seq)


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
    the last folded event. ``injected`` marks a synthetic XID from ``xidwatch inject``
    (never folded into a burst).
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
    injected: bool = False
    pod: PodRef | None = None


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


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """What NVML discovery says about one GPU; stable for the life of the driver.

    ``pci_bus_id`` is NVML's form (``00000000:3B:00.0``), the same the XID parser produces.
    Anything the GPU would not tell (NotSupported) is None.
    """

    uuid: str
    index: int
    name: str
    pci_bus_id: str
    serial: str | None = None
    driver_version: str | None = None
    cuda_version: str | None = None
    slowdown_temp_c: int | None = None
    shutdown_temp_c: int | None = None
    power_limit_default_w: float | None = None
    power_limit_min_w: float | None = None
    power_limit_max_w: float | None = None
    memory_total_bytes: int | None = None
    ecc_enabled: bool | None = None
    mig_enabled: bool | None = None


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One GPU's readings at one sampling tick; None where the GPU does not support a reading.

    Counters (ECC, remapped rows, PCIe replays, NVLink errors) are the driver's running
    totals, not deltas. ``clocks_event_reasons`` is NVML's throttle bitmask.
    """

    uuid: str
    ts_ms: int
    temperature_c: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    sm_clock_mhz: int | None = None
    memory_clock_mhz: int | None = None
    gpu_util_pct: int | None = None
    memory_util_pct: int | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    ecc_corrected_volatile: int | None = None
    ecc_uncorrected_volatile: int | None = None
    ecc_corrected_aggregate: int | None = None
    ecc_uncorrected_aggregate: int | None = None
    remapped_rows_corrected: int | None = None
    remapped_rows_uncorrected: int | None = None
    remap_pending: bool | None = None
    remap_failure: bool | None = None
    clocks_event_reasons: int | None = None
    pcie_replays: int | None = None
    nvlink_active: int | None = None
    nvlink_errors: int | None = None
    process_count: int | None = None


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A compute process seen on a GPU at a tick (NVML's running-process list)."""

    uuid: str
    pid: int
    used_memory_bytes: int | None = None
    name: str | None = None
    pod: PodRef | None = None


@dataclass(frozen=True, slots=True)
class GpuPod:
    """A pod holding a GPU at a tick, and how that is known.

    ``source``: ``annotation`` (a device plugin or scheduler named the GPU on the pod),
    ``whole-node`` (the pod requested every GPU on the node) or ``process`` (one of the
    pod's processes ran on the GPU).
    """

    uuid: str
    pod: PodRef
    source: str


@dataclass(frozen=True, slots=True)
class SampleBatch:
    """Everything one sampling tick produced: a sample per reachable GPU and their processes.

    ``gpus`` carries inventory for GPUs discovered (or rediscovered) at this tick.
    """

    ts_ms: int
    samples: tuple[GpuSample, ...] = ()
    processes: tuple[GpuProcess, ...] = ()
    gpus: tuple[GpuInfo, ...] = ()
    pods: tuple[GpuPod, ...] = ()


@dataclass(frozen=True, slots=True)
class GpuStateEvent:
    """A GPU stopped answering NVML (``lost``, e.g. fallen off the bus) or came back."""

    uuid: str
    ts_ms: int
    state: GpuState
    detail: str = ""


@dataclass(frozen=True, slots=True)
class InventoryGpu:
    """A GPU as the store knows it: discovery facts plus when it was first and last sampled."""

    info: GpuInfo
    first_seen_ms: int
    last_seen_ms: int
    lost_since_ms: int | None


@dataclass(frozen=True, slots=True)
class Bucket:
    """One time bucket of a metric: ``[ts_ms, ts_ms + step)``; None values mean no data."""

    ts_ms: int
    min: float | None
    avg: float | None
    max: float | None
    count: int


@dataclass(frozen=True, slots=True)
class Series:
    """A metric for one GPU over a window, from one tier (``raw``, ``1m`` or ``1h``)."""

    uuid: str
    index: int
    pci_bus_id: str
    metric: str
    unit: str
    tier: str
    step_ms: int
    since_ms: int
    until_ms: int
    buckets: tuple[Bucket, ...]

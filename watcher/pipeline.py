"""From log records to stored events: parse, explain with the catalog, merge, hand to the writer.

Every record either becomes an :class:`XidEvent` or moves its source's watermark (a
:class:`Checkpoint`, coalesced and flushed on a timer), so a restart neither repeats nor
skips anything. Two witnesses of one error are merged here: an implied XID 79 ("fallen
off the bus") right after another 79 on the same GPU, and the same event seen by two
sources (kmsg and a log file) within a couple of seconds, and NVML's XID event for the
same GPU and code as a kernel log line (the NVML one is held back briefly to give the
kernel line time to arrive, and stored on its own only if none does). NVSwitch SXid
follow-on lines (``Severity ...``, ``Data {...}``) fold into their header line; with no
header within a couple of seconds either side (a capture cut, a wrapped ring buffer) they
become the event themselves.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from store.records import Checkpoint, SourceCursor, XidEvent
from watcher.clock import now_ms as wall_now_ms
from watcher.kernel.catalog import XidCatalog
from watcher.kernel.injection import injected_id
from watcher.kernel.parser import FALLEN_OFF_BUS_XID, ParsedXid, parse_xid
from watcher.nvml.events import NvmlXid
from watcher.records import KERNEL_FACILITY, LogRecord, PodLookup

__all__ = ["PipelineStats", "XidPipeline"]

IMPLIED_79_WINDOW_MS = 10 * 60_000
CROSS_SOURCE_WINDOW_MS = 2_000
NVML_WITNESS_WINDOW_MS = 10_000  # kernel line and NVML event of one XID are this close
NVML_HOLD_MS = 2_000  # how long an NVML XID waits for its kernel line
SXID_DETAIL_WINDOW_MS = 2_000  # an SXid header and its follow-on lines are this close
_RECENT_MAX = 4096
# An XID's pid is looked up in /proc only while it can still be that process: a line
# replayed from an old log, or read back after a restart, names a pid since reused.
ATTRIBUTION_MAX_AGE_MS = 60_000


@dataclass(slots=True)
class PipelineStats:
    records: int = 0
    by_source: dict[str, int] = field(default_factory=dict)  # records per LogRecord.source
    parse_failures: int = 0  # NVRM Xid-looking lines parse_xid did not understand
    events: int = 0
    implied_merged: int = 0
    cross_source_merged: int = 0
    sxid_details: int = 0  # follow-on lines folded into their header
    sxid_headerless: int = 0  # SXids stored from follow-on lines alone
    nvml_events: int = 0
    nvml_merged: int = 0
    nvml_only: int = 0


@dataclass(slots=True)
class _Details:
    """Follow-on lines of one SXid whose header has not been seen (yet)."""

    record: LogRecord  # the first line's
    parsed: ParsedXid
    ts_ms: int
    last_ms: int
    messages: list[str]
    texts: list[str]
    cursor: SourceCursor | None


class XidPipeline:
    """Turns each record into an event or a checkpoint and hands it to ``put``."""

    def __init__(
        self,
        put: Callable[[XidEvent | Checkpoint], None],
        catalog: XidCatalog,
        *,
        node: str = "",
        now_ms: Callable[[], int] = wall_now_ms,
        hold_nvml: bool = True,
        accept_injected: bool = False,
        user_space_xids: bool = False,
        gpu_uuids: Mapping[str, str] | None = None,
        pods: PodLookup | None = None,
        stats: PipelineStats | None = None,
    ) -> None:
        self.stats = stats if stats is not None else PipelineStats()
        self.gpu_uuids = dict(gpu_uuids or {})  # PCI bus id -> UUID, from NVML discovery
        self.pods = pods  # Kubernetes attribution, when on a cluster
        self.hold_nvml = hold_nvml
        self.accept_injected = accept_injected  # `xidwatch inject` lines become events
        self.user_space_xids = user_space_xids  # any user-space record may (tests only)
        self._put = put
        self._catalog = catalog
        self._node = node
        self._now_ms = now_ms
        self._kernel_xids: OrderedDict[tuple[str | None, int], int] = OrderedDict()
        self._held: list[NvmlXid] = []
        self._pending: dict[str, SourceCursor] = {}
        self._last_79_ms: dict[str | None, int] = {}
        self._recent: OrderedDict[tuple[object, ...], tuple[str, int]] = OrderedDict()
        self._sxid_headers: OrderedDict[tuple[str | None, int], int] = OrderedDict()
        self._details: dict[tuple[str | None, int], _Details] = {}

    def handle(self, record: LogRecord) -> None:
        """Parse one record; never raises for any text.

        The one place that decides what a record may be: its source hands on everything
        with its facility, and a record not admitted is only a checkpoint.
        """
        if record.text and not self._admits(record):
            record = replace(record, text="")  # a checkpoint only
        self.stats.records += 1
        self.stats.by_source[record.source] = self.stats.by_source.get(record.source, 0) + 1
        parsed = parse_xid(record.text) if record.text else None
        if parsed is None and ("NVRM: Xid" in record.text or "SXid (" in record.text):
            self.stats.parse_failures += 1
        ts_ms = record.ts_ms if record.ts_ms is not None else record.received_ms
        if self._details:
            self._release_details(lambda held: held.last_ms < ts_ms - SXID_DETAIL_WINDOW_MS)
        if parsed is not None and parsed.detail:
            if self._hold_detail(record, parsed, ts_ms):
                return  # its watermark moves with the event it becomes
            parsed = None  # folded into its header: a checkpoint only
        event = self._event(record, parsed) if parsed is not None else None
        if event is None:
            if record.cursor is not None:
                self._pending[record.cursor.source_key] = record.cursor
            return
        self._emit(event)

    def _emit(self, event: XidEvent) -> None:
        """Hand on an event, after any held SXid lines of its source (watermark order)."""
        if event.cursor is not None:
            key = event.cursor.source_key
            if self._details:
                self._release_details(lambda held: _source_key(held.cursor) == key)
            pending = self._pending.get(key)
            if pending is not None and pending.position <= event.cursor.position:
                del self._pending[key]  # the event carries the watermark past it
        self.stats.events += 1
        self._put(self._attributed(event))

    def _attributed(self, event: XidEvent) -> XidEvent:
        """The event with its process's pod, if it is recent enough to look the pid up."""
        pods = self.pods
        if pods is None or event.pid is None or event.injected:
            return event
        if abs(self._now_ms() - event.ts_ms) > ATTRIBUTION_MAX_AGE_MS:
            return event
        pod = pods.pod_for_pid(event.pid)
        return event if pod is None else replace(event, pod=pod)

    def _admits(self, record: LogRecord) -> bool:
        """Whether a record's text may become an event.

        A line tagged by ``xidwatch inject`` only with ``accept_injected``, from any source;
        another record user space wrote to /dev/kmsg only with ``user_space_xids``.
        """
        if injected_id(record.text) is not None:
            return self.accept_injected
        return record.facility == KERNEL_FACILITY or self.user_space_xids

    def handle_nvml(self, xid: NvmlXid) -> None:
        """An NVML XID event: merged with the kernel's line, or held and stored on its own."""
        self.stats.nvml_events += 1
        if self._kernel_saw(xid):
            self.stats.nvml_merged += 1
        elif self.hold_nvml:
            self._held.append(xid)
        else:
            self._store_nvml(xid)

    def flush(self, *, final: bool = False) -> None:
        """Hand on watermarks of records that held no event, and NVML XIDs whose wait is over.

        Call on a timer and at exit (``final``: nothing is held back any longer).
        """
        if self._details:
            due = self._now_ms() - SXID_DETAIL_WINDOW_MS
            self._release_details(lambda held: final or held.last_ms <= due)
        waiting = {_source_key(held.cursor) for held in self._details.values()}
        pending, self._pending = self._pending, {}
        for key, cursor in pending.items():
            if key in waiting:
                self._pending[key] = cursor  # not past a line still held
            else:
                self._put(Checkpoint(cursor))
        if self._held:
            due = self._now_ms() - NVML_HOLD_MS
            keep = []
            for xid in self._held:
                if self._kernel_saw(xid):
                    self.stats.nvml_merged += 1
                elif final or xid.ts_ms <= due:
                    self._store_nvml(xid)
                else:
                    keep.append(xid)
            self._held = keep

    def _kernel_saw(self, xid: NvmlXid) -> bool:
        """True if a kernel line reported this XID on this GPU close in time."""
        if xid.code_known:
            seen = [self._kernel_xids.get((xid.pci_bus_id, xid.code))]
        else:
            seen = [t for (pci, _), t in self._kernel_xids.items() if pci == xid.pci_bus_id]
        return any(t is not None and abs(xid.ts_ms - t) <= NVML_WITNESS_WINDOW_MS for t in seen)

    def _store_nvml(self, xid: NvmlXid) -> None:
        self.stats.nvml_only += 1
        self.stats.events += 1
        info = self._catalog.lookup(xid.code)
        message = (
            "reported by NVML; no kernel log line for it was seen"
            if xid.code_known
            else f"NVML reported an XID without its code ({xid.code}); see the kernel log"
        )
        self._put(
            XidEvent(
                ts_ms=xid.ts_ms,
                received_ms=xid.ts_ms,
                kind="xid",
                xid=xid.code,
                message=message,
                raw="",
                source="nvml",
                action=info.immediate_action,
                node=self._node,
                pci_bus_id=xid.pci_bus_id,
                gpu_uuid=xid.gpu_uuid,
            )
        )

    def _hold_detail(self, record: LogRecord, parsed: ParsedXid, ts_ms: int) -> bool:
        """Fold an SXid follow-on line into its header (False), or hold it for one (True)."""
        key = (parsed.pci_bus_id, parsed.xid)
        header_ms = self._sxid_headers.get(key)
        if header_ms is not None and abs(ts_ms - header_ms) <= SXID_DETAIL_WINDOW_MS:
            self.stats.sxid_details += 1
            return False
        held = self._details.get(key)
        if held is None:
            held = self._details[key] = _Details(record, parsed, ts_ms, ts_ms, [], [], None)
        held.last_ms = max(held.last_ms, ts_ms)
        held.messages.append(parsed.message)
        held.texts.append(record.text)
        held.cursor = record.cursor or held.cursor
        return True

    def _release_details(self, due: Callable[[_Details], bool]) -> None:
        """Store the held follow-on lines ``due`` picks as SXids of their own."""
        for key, held in list(self._details.items()):
            if self._details.get(key) is not held or not due(held):
                continue  # released meanwhile by an event of its source, or not due
            del self._details[key]
            merged = replace(held.parsed, message="; ".join(held.messages), detail=False)
            record = replace(held.record, text="\n".join(held.texts), cursor=held.cursor)
            event = self._event(record, merged)
            if event is not None:
                self.stats.sxid_headerless += 1
                self._emit(event)

    def _event(self, record: LogRecord, parsed: ParsedXid) -> XidEvent | None:
        ts_ms = record.ts_ms if record.ts_ms is not None else record.received_ms
        if parsed.kind == "sxid":
            self._header_seen(parsed, ts_ms)
        if (
            parsed.kind == "xid"
            and parsed.xid == FALLEN_OFF_BUS_XID
            and self._merge_79(parsed, ts_ms)
        ):
            self.stats.implied_merged += 1
            return None
        if self._seen_from_other_source(record.source, parsed, ts_ms):
            self.stats.cross_source_merged += 1
            return None
        info = self._catalog.lookup(parsed.xid, parsed.kind)
        if parsed.kind == "xid":
            self._remember_kernel_xid(parsed.pci_bus_id, parsed.xid, ts_ms)
        return XidEvent(
            ts_ms=ts_ms,
            received_ms=record.received_ms,
            kind=parsed.kind,
            xid=parsed.xid,
            message=parsed.message,
            raw=record.text,
            source=record.source,
            action=info.immediate_action,
            node=self._node,
            pci_bus_id=parsed.pci_bus_id,
            gpu_uuid=self.gpu_uuids.get(parsed.pci_bus_id or ""),
            pid=parsed.pid,
            process=parsed.process,
            mig_gi=parsed.mig_gi,
            mig_ci=parsed.mig_ci,
            cursor=record.cursor,
            capture_seq=None if _from_kmsg(record.cursor) else record.seq,
            injected=injected_id(record.text) is not None,
        )

    def _header_seen(self, parsed: ParsedXid, ts_ms: int) -> None:
        """Remember an SXid header; follow-on lines already held for it fold into it."""
        key = (parsed.pci_bus_id, parsed.xid)
        self._sxid_headers[key] = ts_ms
        self._sxid_headers.move_to_end(key)
        if len(self._sxid_headers) > _RECENT_MAX:
            self._sxid_headers.popitem(last=False)
        held = self._details.get(key)
        if held is not None and abs(ts_ms - held.last_ms) <= SXID_DETAIL_WINDOW_MS:
            del self._details[key]
            self.stats.sxid_details += len(held.messages)

    def _remember_kernel_xid(self, pci: str | None, code: int, ts_ms: int) -> None:
        key = (pci, code)
        self._kernel_xids[key] = ts_ms
        self._kernel_xids.move_to_end(key)
        if len(self._kernel_xids) > _RECENT_MAX:
            self._kernel_xids.popitem(last=False)

    def _merge_79(self, parsed: ParsedXid, ts_ms: int) -> bool:
        """True if this 79 only repeats one already recorded for the GPU (and is implied)."""
        last = self._last_79_ms.get(parsed.pci_bus_id)
        self._last_79_ms[parsed.pci_bus_id] = ts_ms
        return parsed.implied and last is not None and 0 <= ts_ms - last < IMPLIED_79_WINDOW_MS

    def _seen_from_other_source(self, source: str, parsed: ParsedXid, ts_ms: int) -> bool:
        key = (parsed.kind, parsed.xid, parsed.pci_bus_id, parsed.pid, parsed.message)
        seen = self._recent.get(key)
        self._recent[key] = (source, ts_ms)
        self._recent.move_to_end(key)
        if len(self._recent) > _RECENT_MAX:
            self._recent.popitem(last=False)
        return (
            seen is not None
            and seen[0] != source
            and abs(ts_ms - seen[1]) <= CROSS_SOURCE_WINDOW_MS
        )


def _from_kmsg(cursor: SourceCursor | None) -> bool:
    """Whether ``cursor`` is a /dev/kmsg position (which names the kernel record itself)."""
    return cursor is not None and cursor.kmsg_record is not None


def _source_key(cursor: SourceCursor | None) -> str | None:
    return None if cursor is None else cursor.source_key

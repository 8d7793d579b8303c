"""From log records to stored events: parse, explain with the catalog, merge, hand to the writer.

Every record either becomes an :class:`XidEvent` or moves its source's watermark (a
:class:`Checkpoint`, coalesced and flushed on a timer), so a restart neither repeats nor
skips anything. Two witnesses of one error are merged here: an implied XID 79 ("fallen
off the bus") right after another 79 on the same GPU, and the same event seen by two
sources (kmsg and a log file) within a couple of seconds.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from store.records import Checkpoint, SourceCursor, XidEvent
from watcher.catalog import XidCatalog
from watcher.records import LogRecord
from watcher.xid import FALLEN_OFF_BUS_XID, ParsedXid, parse_xid

__all__ = ["PipelineStats", "XidPipeline"]

IMPLIED_79_WINDOW_MS = 10 * 60_000
CROSS_SOURCE_WINDOW_MS = 2_000
_RECENT_MAX = 4096


@dataclass(slots=True)
class PipelineStats:
    records: int = 0
    events: int = 0
    implied_merged: int = 0
    cross_source_merged: int = 0
    sxid_details: int = 0


class XidPipeline:
    """Turns each record into an event or a checkpoint and hands it to ``put``."""

    def __init__(
        self,
        put: Callable[[XidEvent | Checkpoint], None],
        catalog: XidCatalog,
        *,
        node: str = "",
    ) -> None:
        self.stats = PipelineStats()
        self._put = put
        self._catalog = catalog
        self._node = node
        self._pending: dict[str, SourceCursor] = {}
        self._last_79_ms: dict[str | None, int] = {}
        self._recent: OrderedDict[tuple[object, ...], tuple[str, int]] = OrderedDict()

    def handle(self, record: LogRecord) -> None:
        """Parse one record; never raises for any text."""
        self.stats.records += 1
        parsed = parse_xid(record.text) if record.text else None
        event = self._event(record, parsed) if parsed is not None else None
        if event is None:
            if record.cursor is not None:
                self._pending[record.cursor.source_key] = record.cursor
            return
        if record.cursor is not None:
            self._pending.pop(record.cursor.source_key, None)
        self.stats.events += 1
        self._put(event)

    def flush(self) -> None:
        """Hand on the watermark of records that held no event (call on a timer and at exit)."""
        pending, self._pending = self._pending, {}
        for cursor in pending.values():
            self._put(Checkpoint(cursor))

    def _event(self, record: LogRecord, parsed: ParsedXid) -> XidEvent | None:
        ts_ms = record.ts_ms if record.ts_ms is not None else record.received_ms
        if parsed.detail:
            self.stats.sxid_details += 1
            return None
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
            pid=parsed.pid,
            process=parsed.process,
            mig_gi=parsed.mig_gi,
            mig_ci=parsed.mig_ci,
            boot_id=record.boot_id,
            seq=record.seq,
            cursor=record.cursor,
        )

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

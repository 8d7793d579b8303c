"""The single writer: one task owns the write connection and commits in batches.

Producers call :meth:`StoreWriter.put` (never blocks, never drops an XID). The task takes
what is queued (group commit: whatever arrived while the last commit ran, up to
``batch_max``; ``flush_interval_s`` > 0 waits that long for more) and commits it in one
transaction together with the source watermarks, so a crash can lose
neither an event nor the record of having stored it. A failed commit (disk full, file
locked) is rolled back and retried with backoff; the batch is kept in memory meanwhile.

Each kernel record is stored once by its content (:func:`store.schema.record_key`), so a
capture replayed again, with other line endings or inside a longer one, adds nothing: a
record already stored (on its own row or folded into a burst) is skipped. The writer holds
the store's writer lock from :meth:`StoreWriter.open` until its connection closes.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiosqlite
import structlog

from store.db import WriterLock, acquire_writer_lock, open_for_writing
from store.flood import MAX_BURST_SPAN_MS, FloodKey, FloodPolicy, FloodState
from store.pacing import Backoff
from store.records import Checkpoint, GpuStateEvent, SampleBatch, XidEvent
from store.samples import TelemetryResult, TelemetryWriter, pod_columns
from store.schema import record_key

__all__ = ["StoreWriter", "WriterStats"]

log = structlog.get_logger("store.writer")

Item = XidEvent | Checkpoint | SampleBatch | GpuStateEvent
_Entry = tuple[Item, bytes | None]  # an item and, for a kernel record's XID, its content key
T = TypeVar("T")

# Sample batches waiting beyond this many queued items are shed (counted): telemetry is
# replaceable by the next tick, XIDs are not.
MAX_QUEUED_FOR_SAMPLES = 10_000
_FIRST_BACKOFF_S = 0.05  # a failed commit's first wait, doubling up to ``max_backoff_s``

_INSERT_EVENT = """
INSERT OR IGNORE INTO xid_events (
    ts_ms, last_ts_ms, received_ms, count, burst, node, kind, xid, pci_bus_id, gpu_uuid,
    mig_gi, mig_ci, pid, process, message, raw, source, action, boot_id, seq, injected,
    namespace, pod, container
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_KEY = "INSERT OR IGNORE INTO xid_keys (content_key, ts_ms) VALUES (?, ?)"
# Keys of records older than every event kept (retention dropped them) are let go too.
_DROP_OLD_KEYS = "DELETE FROM xid_keys WHERE ts_ms < (SELECT min(ts_ms) FROM xid_events)"
_KNOWN_CHUNK = 500  # keys per lookup: under SQLite's oldest limit of 999 variables
_GROW_BURST = """
UPDATE xid_events SET count = count + ?, last_ts_ms = max(last_ts_ms, ?),
    pid = ?, process = ?, message = ?, raw = ?, namespace = ?, pod = ?, container = ?
WHERE id = ?
"""
_UPSERT_WATERMARK = """
INSERT INTO watermarks (source_key, position, updated_ms) VALUES (?, ?, ?)
ON CONFLICT (source_key) DO UPDATE SET
    position = max(position, excluded.position), updated_ms = excluded.updated_ms
"""


@dataclass(slots=True)
class WriterStats:
    """Counters the daemon exports; all cumulative since start."""

    events_stored: int = 0
    events_folded: int = 0
    duplicates_skipped: int = 0
    batches: int = 0
    commit_retries: int = 0
    last_commit_s: float = 0.0
    last_commit_wall_ms: int = 0
    samples_stored: int = 0
    samples_shed: int = 0
    samples_out_of_order: int = 0
    samples_unknown_gpu: int = 0
    gpu_state_events: int = 0


@dataclass(slots=True)
class _Burst:
    row_id: int | None  # None until inserted
    first_ts_ms: int
    last_ts_ms: int

    def absorbs(self, ts_ms: int, gap_ms: int) -> bool:
        """A folded event joins this burst if it is close and the span stays bounded."""
        return ts_ms - self.last_ts_ms <= gap_ms and ts_ms - self.first_ts_ms < MAX_BURST_SPAN_MS


@dataclass(slots=True)
class _Growth:
    """What one batch adds to one burst row: a new head row and/or extra folded events."""

    burst: _Burst
    head: XidEvent | None
    last: XidEvent
    extra: int = 0


@dataclass(slots=True)
class _Plan:
    inserts: list[XidEvent] = field(default_factory=list)
    keys: list[tuple[bytes, int]] = field(default_factory=list)  # (content key, ts_ms) to add
    accepted: list[XidEvent] = field(default_factory=list)
    growths: list[_Growth] = field(default_factory=list)
    current: dict[FloodKey, _Growth] = field(default_factory=dict)
    watermarks: dict[str, int] = field(default_factory=dict)
    samples: list[SampleBatch] = field(default_factory=list)
    states: list[GpuStateEvent] = field(default_factory=list)
    telemetry: TelemetryResult = field(default_factory=TelemetryResult)
    duplicates: int = 0
    folded: int = 0
    stored: int = 0


class StoreWriter:
    """Owns the store's write connection; see the module docstring for the contract."""

    def __init__(
        self,
        path: Path,
        *,
        flood: FloodPolicy | None = None,
        batch_max: int = 1000,
        flush_interval_s: float = 0.0,
        max_backoff_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        on_commit: Callable[[Sequence[XidEvent]], None] | None = None,
    ) -> None:
        self.path = path
        self.stats = WriterStats()
        self.failing: str | None = None  # the last commit error while retrying, else None
        self._flood = FloodState(flood or FloodPolicy())
        self._batch_max = batch_max
        self._flush_interval_s = flush_interval_s
        self._backoff = Backoff(_FIRST_BACKOFF_S, max_backoff_s)
        self._clock = clock
        self._on_commit = on_commit
        self._queue: asyncio.Queue[_Entry | None] = asyncio.Queue()
        self._conn: aiosqlite.Connection | None = None
        self._writer_lock: WriterLock | None = None
        self._repeats: dict[str, tuple[int, dict[bytes, int]]] = {}
        self._watermarks: dict[str, int] = {}
        self._bursts: dict[FloodKey, _Burst] = {}
        self._telemetry = TelemetryWriter()
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Take the writer lock, open the connection, load watermarks and open bursts.

        Fails at once (:class:`store.db.StoreLockedError`) if another process writes here.
        """
        self._writer_lock = await asyncio.to_thread(acquire_writer_lock, self.path)
        try:
            self._conn = await open_for_writing(self.path)
        except BaseException:
            self._release_lock()
            raise
        async with self._conn.execute("SELECT source_key, position FROM watermarks") as cur:
            self._watermarks = {str(k): int(p) async for k, p in cur}
        cutoff_ms = int(self._clock() * 1000) - self._flood.policy.gap_ms
        query = (
            "SELECT kind, coalesce(pci_bus_id, ''), xid, max(id), ts_ms, last_ts_ms "
            "FROM xid_events WHERE burst = 1 AND last_ts_ms >= ? GROUP BY 1, 2, 3"
        )
        async with self._conn.execute(query, (cutoff_ms,)) as cur:
            async for kind, pci, xid, row_id, first_ts, last_ts in cur:
                self._bursts[(kind, pci, int(xid))] = _Burst(row_id, first_ts, last_ts)
        await self._telemetry.load(self._conn)

    def watermark(self, source_key: str) -> int | None:
        """The highest committed position for a source, or None if it was never seen."""
        return self._watermarks.get(source_key)

    def put(self, item: Item) -> None:
        """Queue an item; never blocks, never drops an XID (samples are shed when backed up)."""
        if isinstance(item, SampleBatch) and self._queue.qsize() >= MAX_QUEUED_FOR_SAMPLES:
            self.stats.samples_shed += len(item.samples)
            if not item.gpus:
                return
            item = _announcement_only(item)
        key = self._content_key(item) if isinstance(item, XidEvent) else None
        self._queue.put_nowait((item, key))

    def _content_key(self, event: XidEvent) -> bytes | None:
        """The kernel record's identity, for records from a text (a capture, a tailed file).

        None where the store needs none: a kmsg record is already one row per
        ``UNIQUE(boot_id, seq)``; NVML and ``xidwatch inject`` carry no kernel line.
        Identical lines at the same millisecond of one stream are told apart by their order.
        """
        boot_id, seq = event.kernel_record
        if not event.raw or event.injected or (boot_id is not None and seq is not None):
            return None
        base = record_key(boot_id, seq, event.ts_ms, event.raw)
        stream = event.cursor.source_key if event.cursor is not None else event.source
        at_ms, seen = self._repeats.get(stream, (None, {}))
        if at_ms != event.ts_ms:
            seen = {}
            self._repeats[stream] = (event.ts_ms, seen)
        nth = seen.get(base, 0)
        seen[base] = nth + 1
        return base if nth == 0 else record_key(boot_id, seq, event.ts_ms, event.raw, nth)

    async def exclusive(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``work`` on the write connection between commits (retention, vacuum)."""
        async with self._lock:
            assert self._conn is not None, "StoreWriter.open() was not awaited"
            return await work(self._conn)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    async def run(self) -> None:
        """Commit batches until :meth:`close` is called, then drain what is left."""
        if self._conn is None:
            await self.open()
        done = False
        while not done:
            batch, done = await self._next_batch()
            if batch:
                await self._commit(batch)

    async def close(self) -> None:
        """Ask :meth:`run` to finish after committing everything queued before this call."""
        self._queue.put_nowait(None)

    async def aclose_connection(self) -> None:
        """Close the connection and give the writer lock back."""
        try:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None
        finally:
            self._release_lock()

    def _release_lock(self) -> None:
        if self._writer_lock is not None:
            self._writer_lock.release()
            self._writer_lock = None

    async def _next_batch(self) -> tuple[list[_Entry], bool]:
        first = await self._queue.get()
        if first is None:
            return self._drain_nowait(), True
        batch = [first]
        deadline = asyncio.get_running_loop().time() + self._flush_interval_s
        while len(batch) < self._batch_max:
            if self._queue.empty():
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), timeout)
                except TimeoutError:
                    break
            else:
                item = self._queue.get_nowait()
            if item is None:
                return batch + self._drain_nowait(), True
            batch.append(item)
        return batch, False

    def _drain_nowait(self) -> list[_Entry]:
        items: list[_Entry] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                items.append(item)
        return items

    async def _commit(self, batch: list[_Entry]) -> None:
        attempt = 0
        while True:
            flood = self._flood.copy()
            bursts = {
                k: _Burst(b.row_id, b.first_ts_ms, b.last_ts_ms) for k, b in self._bursts.items()
            }
            plan = _Plan()
            started = time.perf_counter()
            try:
                async with self._lock:
                    known = await self._known_keys(batch)
                    plan = self._plan(batch, flood, bursts, known)
                    await self._apply(plan)
            except sqlite3.OperationalError as e:
                await self._rollback()
                self.failing = str(e)
                self._telemetry.rolled_back()
                shed = sum(len(i.samples) for i, _ in batch if isinstance(i, SampleBatch))
                self.stats.samples_shed += shed
                batch = [
                    (_announcement_only(i), k) if isinstance(i, SampleBatch) else (i, k)
                    for i, k in batch
                    if not isinstance(i, SampleBatch) or i.gpus
                ]
                self.stats.commit_retries += 1
                attempt += 1
                backoff_s = self._backoff.delay_s(attempt)
                log.warning(
                    "store_commit_failed_retrying",
                    error=str(e),
                    pending=len(batch),
                    samples_shed=shed,
                    retry_in_s=backoff_s,
                )
                await asyncio.sleep(backoff_s)
                continue
            break
        self.failing = None
        self._telemetry.commit_succeeded(plan.samples)
        t = plan.telemetry
        self.stats.samples_stored += t.samples_stored
        self.stats.samples_out_of_order += t.samples_out_of_order
        self.stats.samples_unknown_gpu += t.samples_unknown_gpu
        self.stats.gpu_state_events += t.state_events
        self._flood, self._bursts = flood, bursts
        self._watermarks.update(plan.watermarks)
        self.stats.batches += 1
        self.stats.events_stored += plan.stored
        self.stats.events_folded += plan.folded
        self.stats.duplicates_skipped += plan.duplicates
        self.stats.last_commit_s = time.perf_counter() - started
        self.stats.last_commit_wall_ms = int(self._clock() * 1000)
        for event in plan.inserts:
            log.info(
                "xid_stored",
                xid=event.xid,
                kind=event.kind,
                gpu=event.pci_bus_id,
                action=event.action,
                pid=event.pid,
                source=event.source,
                injected=event.injected,
            )
        for growth in plan.growths:
            if growth.head is not None:
                log.warning("xid_flood_folding", xid=growth.head.xid, gpu=growth.head.pci_bus_id)
        if self._on_commit is not None:
            self._on_commit(plan.accepted)

    async def _known_keys(self, batch: list[_Entry]) -> set[bytes]:
        """Which of the batch's content keys the store already holds (row or folded)."""
        conn = self._conn
        assert conn is not None, "StoreWriter.open() was not awaited"
        keys = [k for _, k in batch if k is not None]
        known: set[bytes] = set()
        for start in range(0, len(keys), _KNOWN_CHUNK):
            chunk = keys[start : start + _KNOWN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            query = f"SELECT content_key FROM xid_keys WHERE content_key IN ({marks})"
            async with conn.execute(query, chunk) as cur:
                known.update([bytes(row[0]) async for row in cur])
        return known

    def _plan(
        self,
        batch: list[_Entry],
        flood: FloodState,
        bursts: dict[FloodKey, _Burst],
        known: set[bytes] | None = None,
    ) -> _Plan:
        plan = _Plan()
        marks = plan.watermarks
        stored = set(known or ())
        for item, content_key in batch:
            if isinstance(item, SampleBatch):
                plan.samples.append(item)
                continue
            if isinstance(item, GpuStateEvent):
                plan.states.append(item)
                continue
            cursor = item.cursor
            if cursor is not None:
                seen = marks.get(cursor.source_key, self._watermarks.get(cursor.source_key, -1))
                if cursor.position <= seen:
                    plan.duplicates += isinstance(item, XidEvent)
                    continue
                marks[cursor.source_key] = cursor.position
            if isinstance(item, Checkpoint):
                continue
            if content_key is not None:
                if content_key in stored:  # this kernel record is stored already
                    plan.duplicates += 1
                    continue
                stored.add(content_key)
                plan.keys.append((content_key, item.ts_ms))
            plan.accepted.append(item)
            key: FloodKey = (item.kind, item.pci_bus_id or "", item.xid)
            # A synthetic XID keeps its own row and spends no real event's token.
            if item.injected or flood.admit(key, item.ts_ms):
                plan.inserts.append(item)
            else:
                self._fold(plan, bursts, key, item)
        return plan

    def _fold(
        self, plan: _Plan, bursts: dict[FloodKey, _Burst], key: FloodKey, event: XidEvent
    ) -> None:
        plan.folded += 1
        burst = bursts.get(key)
        if burst is None or not burst.absorbs(event.ts_ms, self._flood.policy.gap_ms):
            burst = bursts[key] = _Burst(None, event.ts_ms, event.ts_ms)
            plan.current[key] = _Growth(burst, head=event, last=event)
            plan.growths.append(plan.current[key])
            return
        burst.last_ts_ms = max(burst.last_ts_ms, event.ts_ms)
        growth = plan.current.get(key)
        if growth is None or growth.burst is not burst:
            growth = plan.current[key] = _Growth(burst, head=None, last=event)
            plan.growths.append(growth)
        growth.extra += 1
        growth.last = event

    async def _apply(self, plan: _Plan) -> None:
        conn = self._conn
        assert conn is not None, "StoreWriter.open() was not awaited"
        now_ms = int(self._clock() * 1000)
        await conn.execute("BEGIN IMMEDIATE")
        before = conn.total_changes
        if plan.inserts:
            await conn.executemany(_INSERT_EVENT, [_row(e, burst=False) for e in plan.inserts])
        plan.stored = conn.total_changes - before
        plan.duplicates += len(plan.inserts) - plan.stored
        grows = []
        for g in plan.growths:
            if g.head is not None:
                cur = await conn.execute(_INSERT_EVENT, _row(g.head, burst=True))
                g.burst.row_id = cur.lastrowid
            if g.extra:
                last = g.last
                grows.append(
                    (
                        g.extra,
                        last.ts_ms,
                        last.pid,
                        last.process,
                        last.message,
                        last.raw,
                        *pod_columns(last.pod),
                        g.burst.row_id,
                    )
                )
        if grows:
            await conn.executemany(_GROW_BURST, grows)
        if plan.keys:
            await conn.executemany(_INSERT_KEY, plan.keys)
            await conn.execute(_DROP_OLD_KEYS)
        if plan.watermarks:
            await conn.executemany(
                _UPSERT_WATERMARK, [(k, p, now_ms) for k, p in plan.watermarks.items()]
            )
        if plan.samples or plan.states:
            plan.telemetry = await self._telemetry.write(conn, plan.samples, plan.states)
        await conn.commit()

    async def _rollback(self) -> None:
        if self._conn is not None:
            try:
                await self._conn.rollback()
            except sqlite3.Error:
                log.warning("store_rollback_failed")


def _announcement_only(batch: SampleBatch) -> SampleBatch:
    """What is kept of a shed batch: the GPUs it announces (inventory is never shed)."""
    return SampleBatch(batch.ts_ms, gpus=batch.gpus)


def _row(e: XidEvent, *, burst: bool) -> tuple[object, ...]:
    """Column values for ``_INSERT_EVENT``; a burst row keeps no (boot_id, seq) identity."""
    return (
        e.ts_ms,
        e.ts_ms,
        e.received_ms,
        1,
        int(burst),
        e.node,
        e.kind,
        e.xid,
        e.pci_bus_id,
        e.gpu_uuid,
        e.mig_gi,
        e.mig_ci,
        e.pid,
        e.process,
        e.message,
        e.raw,
        e.source,
        e.action,
        *((None, None) if burst else e.kernel_record),
        int(e.injected),
        *pod_columns(e.pod),
    )

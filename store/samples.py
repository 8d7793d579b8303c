"""The telemetry write path: raw samples, inventory, processes, GPU state, and their rollups.

Called by :class:`store.writer.StoreWriter` inside its transaction, so a sample, the rollup
rows it updates (:mod:`store.rollups`) and the inventory change all commit (or roll back)
together; a restart never double-counts a rollup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Generic, TypeVar

import aiosqlite
import structlog

from store.records import (
    GpuInfo,
    GpuPod,
    GpuProcess,
    GpuSample,
    GpuStateEvent,
    PodRef,
    SampleBatch,
)
from store.rollups import RollupAccumulator
from store.telemetry import RAW_COLUMNS, raw_row, sample_from_raw

__all__ = [
    "PROCESS_GAP_MS",
    "TelemetryResult",
    "TelemetryWriter",
    "pod_columns",
]

log = structlog.get_logger("store.samples")

# A process (or a pod on a GPU) not seen for this long starts a new row when it reappears
# (pid reuse, restart).
PROCESS_GAP_MS = 5 * 60_000
_MIB = 1 << 20

_RAW_NAMES = [c for c, _ in RAW_COLUMNS]
_INSERT_SAMPLE = (
    f"INSERT OR IGNORE INTO samples (gpu, ts, {', '.join(_RAW_NAMES)}) "
    f"VALUES ({', '.join('?' * (len(_RAW_NAMES) + 2))})"
)
GPU_INFO_COLUMNS = {f.name: "idx" if f.name == "index" else f.name for f in fields(GpuInfo)}
"""Each ``GpuInfo`` field's column in ``gpus`` (``index`` is a keyword in SQL)."""
_GPU_FIELDS = list(GPU_INFO_COLUMNS.values())
_UPSERT_GPU = (
    f"INSERT INTO gpus ({', '.join(_GPU_FIELDS)}, first_seen_ms, last_seen_ms) "
    f"VALUES ({', '.join('?' * (len(_GPU_FIELDS) + 2))}) "
    "ON CONFLICT (uuid) DO UPDATE SET "
    + ", ".join(f"{f} = excluded.{f}" for f in _GPU_FIELDS[1:])
    + ", last_seen_ms = max(last_seen_ms, excluded.last_seen_ms) RETURNING id"
)

_UPSERT_PROCESS = """
INSERT INTO gpu_processes (
    gpu, pid, first_ts, last_ts, used_mib, max_used_mib, name, namespace, pod, container
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (gpu, pid, first_ts) DO UPDATE SET
    last_ts = excluded.last_ts,
    used_mib = excluded.used_mib,
    max_used_mib = max(coalesce(max_used_mib, excluded.max_used_mib),
                       coalesce(excluded.max_used_mib, max_used_mib)),
    name = coalesce(excluded.name, name),
    namespace = coalesce(excluded.namespace, namespace),
    pod = coalesce(excluded.pod, pod),
    container = coalesce(excluded.container, container)
"""
# The first way a pod was seen holding a GPU names the span's source.
_UPSERT_POD = """
INSERT INTO gpu_pods (gpu, namespace, pod, first_ts, last_ts, uid, source)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (gpu, namespace, pod, first_ts) DO UPDATE SET
    last_ts = max(last_ts, excluded.last_ts),
    uid = coalesce(excluded.uid, uid)
"""


K = TypeVar("K")


def pod_columns(pod: PodRef | None) -> tuple[str | None, str | None, str | None]:
    """The namespace, pod and container columns of an XID or process row."""
    return (None, None, None) if pod is None else (pod.namespace, pod.pod, pod.container)


class _Spans(Generic[K]):
    """Open spans by key: a key seen again within PROCESS_GAP_MS extends its span.

    Tracks what the last commit made durable, so a rolled-back transaction is retried with
    the same span starts.
    """

    def __init__(self) -> None:
        self.open: dict[K, tuple[int, int]] = {}  # key -> (first_ts, last_ts)
        self._committed: dict[K, tuple[int, int]] = {}

    def extend(self, key: K, ts_ms: int) -> int:
        """Record ``key`` seen at ``ts_ms``; return its span's first tick."""
        span = self.open.get(key)
        first = span[0] if span is not None and 0 <= ts_ms - span[1] <= PROCESS_GAP_MS else ts_ms
        self.open[key] = (first, ts_ms)
        return first

    def committed(self) -> None:
        self._committed = dict(self.open)

    def rolled_back(self) -> None:
        self.open = dict(self._committed)


@dataclass(slots=True)
class TelemetryResult:
    samples_stored: int = 0
    samples_out_of_order: int = 0
    samples_unknown_gpu: int = 0
    state_events: int = 0


class TelemetryWriter:
    """The writer's telemetry state: GPU ids, last sample time per GPU, open process rows."""

    def __init__(self) -> None:
        self._gpu_ids: dict[str, int] = {}
        self._last_ts: dict[int, int] = {}
        self._procs: _Spans[tuple[int, int]] = _Spans()  # (gpu, pid)
        self._pods: _Spans[tuple[int, str, str]] = _Spans()  # (gpu, namespace, pod)
        self._committed_ids: dict[str, int] = {}

    async def load(self, conn: aiosqlite.Connection) -> None:
        """Read back what a previous run left: GPU ids, newest sample per GPU, live processes."""
        async with conn.execute("SELECT uuid, id FROM gpus") as cur:
            self._gpu_ids = {str(u): int(i) async for u, i in cur}
        for gpu in self._gpu_ids.values():
            async with conn.execute("SELECT max(ts) FROM samples WHERE gpu = ?", (gpu,)) as cur:
                row = await cur.fetchone()
            if row is not None and row[0] is not None:
                self._last_ts[gpu] = int(row[0])
        query = (
            "SELECT gpu, pid, max(first_ts), max(last_ts) FROM gpu_processes "
            "WHERE last_ts >= (SELECT coalesce(max(last_ts), 0) FROM gpu_processes) - ? "
            "GROUP BY gpu, pid"
        )
        async with conn.execute(query, (PROCESS_GAP_MS,)) as cur:
            self._procs.open = {(int(g), int(p)): (int(f), int(t)) async for g, p, f, t in cur}
        query = (
            "SELECT gpu, namespace, pod, max(first_ts), max(last_ts) FROM gpu_pods "
            "WHERE last_ts >= (SELECT coalesce(max(last_ts), 0) FROM gpu_pods) - ? "
            "GROUP BY gpu, namespace, pod"
        )
        async with conn.execute(query, (PROCESS_GAP_MS,)) as cur:
            self._pods.open = {
                (int(g), str(ns), str(p)): (int(f), int(t)) async for g, ns, p, f, t in cur
            }
        self._mark_committed()

    def _mark_committed(self) -> None:
        self._procs.committed()
        self._pods.committed()
        self._committed_ids = dict(self._gpu_ids)

    async def write(
        self,
        conn: aiosqlite.Connection,
        batches: Sequence[SampleBatch],
        states: Sequence[GpuStateEvent],
    ) -> TelemetryResult:
        """Write batches and state events on ``conn`` inside the caller's transaction."""
        result = TelemetryResult()
        for batch in batches:
            for info in batch.gpus:
                await self._upsert_gpu(conn, info, batch.ts_ms)
        rows, rollups, seen = self._plan_samples(batches, result)
        if rows:
            await conn.executemany(_INSERT_SAMPLE, rows)
        await rollups.upsert(conn)
        last_seen: dict[int, int] = {}
        for gpu_id, ts in seen:
            last_seen[gpu_id] = max(ts, last_seen.get(gpu_id, ts))
        await conn.executemany(
            "UPDATE gpus SET last_seen_ms = max(last_seen_ms, ?) WHERE id = ?",
            [(ts, gpu) for gpu, ts in last_seen.items()],
        )
        processes = [row for b in batches for row in self._process_rows(b.ts_ms, b.processes)]
        if processes:
            await conn.executemany(_UPSERT_PROCESS, processes)
        pods = [row for b in batches for row in self._pod_rows(b)]
        if pods:
            await conn.executemany(_UPSERT_POD, pods)
        for event in states:
            await self._write_state(conn, event)
            result.state_events += 1
        result.samples_stored = len(rows)
        return result

    def rolled_back(self) -> None:
        """Forget what the failed transaction planned, so its retry writes the same rows.

        Ids of rolled-back ``gpus`` rows do not exist, and process spans it opened were
        never stored: go back to the state of the last commit.
        """
        self._procs.rolled_back()
        self._pods.rolled_back()
        self._gpu_ids = dict(self._committed_ids)

    def commit_succeeded(self, batches: Sequence[SampleBatch]) -> None:
        """Advance the per-GPU high-water marks once the transaction is durable."""
        self._mark_committed()
        for batch in batches:
            for s in batch.samples:
                gpu = self._gpu_ids.get(s.uuid)
                if gpu is not None and s.ts_ms > self._last_ts.get(gpu, -1):
                    self._last_ts[gpu] = s.ts_ms

    def _plan_samples(
        self, batches: Sequence[SampleBatch], result: TelemetryResult
    ) -> tuple[list[list[int | None]], RollupAccumulator, list[tuple[int, int]]]:
        rows: list[list[int | None]] = []
        rollups = RollupAccumulator()
        seen: list[tuple[int, int]] = []
        high: dict[int, int] = {}
        for batch in batches:
            for sample in batch.samples:
                gpu = self._gpu_ids.get(sample.uuid)
                if gpu is None:
                    result.samples_unknown_gpu += 1
                    continue
                last = high.get(gpu, self._last_ts.get(gpu, -1))
                if sample.ts_ms <= last:
                    result.samples_out_of_order += 1
                    continue
                high[gpu] = sample.ts_ms
                row = raw_row(sample)
                rows.append([gpu, sample.ts_ms, *row.values()])
                rollups.add(gpu, sample.ts_ms, row)
                seen.append((gpu, sample.ts_ms))
        return rows, rollups, seen

    async def _upsert_gpu(self, conn: aiosqlite.Connection, info: GpuInfo, ts_ms: int) -> None:
        values = [*(getattr(info, f) for f in GPU_INFO_COLUMNS), ts_ms, ts_ms]
        async with conn.execute(_UPSERT_GPU, values) as cur:
            row = await cur.fetchone()
        assert row is not None
        self._gpu_ids[info.uuid] = int(row[0])

    def _process_rows(
        self, ts_ms: int, processes: Sequence[GpuProcess]
    ) -> list[tuple[object, ...]]:
        """Upsert rows for one tick: a process seen again extends its row, else starts one."""
        rows: list[tuple[object, ...]] = []
        for p in processes:
            gpu = self._gpu_ids.get(p.uuid)
            if gpu is None:
                continue
            used = None if p.used_memory_bytes is None else round(p.used_memory_bytes / _MIB)
            first = self._procs.extend((gpu, p.pid), ts_ms)
            rows.append((gpu, p.pid, first, ts_ms, used, used, p.name, *pod_columns(p.pod)))
        return rows

    def _pod_rows(self, batch: SampleBatch) -> list[tuple[object, ...]]:
        """Upsert rows for the pods holding each GPU at one tick, its processes' pods included."""
        held = [
            *batch.pods,
            *(GpuPod(p.uuid, p.pod, "process") for p in batch.processes if p.pod is not None),
        ]
        rows: dict[tuple[int, str, str], tuple[object, ...]] = {}
        for g in held:
            gpu = self._gpu_ids.get(g.uuid)
            if gpu is None:
                continue
            key = (gpu, g.pod.namespace, g.pod.pod)
            if key in rows:  # the first source named wins within a tick
                continue
            first = self._pods.extend(key, batch.ts_ms)
            rows[key] = (*key, first, batch.ts_ms, g.pod.uid, g.source)
        return list(rows.values())

    async def _write_state(self, conn: aiosqlite.Connection, event: GpuStateEvent) -> None:
        gpu = self._gpu_ids.get(event.uuid)
        if gpu is None:
            log.warning("gpu_state_for_unknown_gpu", uuid=event.uuid, state=event.state)
            return
        await conn.execute(
            "INSERT INTO gpu_events (ts_ms, gpu, state, detail) VALUES (?, ?, ?, ?)",
            (event.ts_ms, gpu, event.state, event.detail),
        )
        lost = event.ts_ms if event.state == "lost" else None
        await conn.execute("UPDATE gpus SET lost_since_ms = ? WHERE id = ?", (lost, gpu))


def sample_from_row(uuid: str, row: Sequence[int | None]) -> GpuSample:
    """A stored ``samples`` row (ts first, then RAW_COLUMNS) as a GpuSample."""
    return sample_from_raw(uuid, int(row[0] or 0), row[1:])

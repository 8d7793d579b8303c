"""Retention: exactly what each tier no longer keeps is deleted, and its pages go back to disk."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import aiosqlite
from structlog.testing import capture_logs

from store.db import open_for_writing, prepare_store
from store.flood import FloodPolicy
from store.records import GpuInfo, GpuProcess, GpuSample, GpuStateEvent, SampleBatch
from store.retention import RetentionPolicy, RetentionResult, apply_retention
from store.schema import MIGRATIONS, SCHEMA_VERSION
from store.writer import StoreWriter
from tests.store.helpers import event, rows, write_all
from tests.waiting import wait_until_async

T0 = 1_800_000_000_000  # on an hour boundary
MIN, HOUR = 60_000, 3_600_000
NOW = T0 + 8 * HOUR
POLICY = RetentionPolicy(raw_ms=30 * MIN, minute_ms=2 * HOUR, hour_ms=5 * HOUR, events_ms=4 * HOUR)
TICK_MS = 30_000
GPUS = (
    GpuInfo("GPU-0a1b2c3d-1111-4000-8000-000000000000", 0, "H100", "00000000:3B:00.0"),
    GpuInfo("GPU-9f8e7d6c-2222-4000-8000-000000000000", 1, "H100", "00000000:86:00.0"),
)


def ticks(start_ms: int = T0, end_ms: int = NOW) -> list[SampleBatch]:
    """A tick every 30 s for both GPUs; process p runs from p * 30 min for 20 min on GPU 0."""
    out = []
    for ts in range(start_ms, end_ms, TICK_MS):
        p, into = divmod(ts - T0, 30 * MIN)
        procs = (GpuProcess(GPUS[0].uuid, 1000 + p, 512 << 20, "train"),) if into < 20 * MIN else ()
        samples = tuple(
            GpuSample(g.uuid, ts, temperature_c=50 + ts // TICK_MS % 20, power_w=300.5)
            for g in GPUS
        )
        out.append(SampleBatch(ts, samples, procs))
    return out


def states() -> list[GpuStateEvent]:
    return [
        GpuStateEvent(GPUS[0].uuid, T0 + HOUR, "lost"),
        GpuStateEvent(GPUS[0].uuid, T0 + HOUR + 5 * MIN, "recovered"),
        GpuStateEvent(GPUS[1].uuid, T0 + 4 * HOUR, "lost"),  # exactly at the cutoff: kept
        GpuStateEvent(GPUS[1].uuid, T0 + 7 * HOUR, "recovered"),
    ]


async def fill(path: Path) -> None:
    """Telemetry, GPU events and XIDs over eight hours, with a burst across the XID cutoff."""
    xids = [event(n, ts_ms=T0 + n * 20 * MIN) for n in range(24)]
    await write_all(path, [SampleBatch(T0, gpus=GPUS), *ticks(), *states(), *xids])
    # 79s every minute from 3 h 50 min: one row, then a burst row that ends past the cutoff
    burst = [event(100 + n, xid=79, ts_ms=T0 + 230 * MIN + n * MIN) for n in range(21)]
    await write_all(path, burst, flood=FloodPolicy(burst=1, per_minute=0.001))


Row = tuple[Any, ...]


def pragma(path: Path, name: str) -> int:
    ((value,),) = rows(path, f"PRAGMA {name}")
    return int(value)


async def retain(path: Path, policy: RetentionPolicy = POLICY) -> RetentionResult:
    conn = await open_for_writing(path)
    try:
        return await apply_retention(conn, policy, now_ms=NOW)
    finally:
        await conn.close()


# table -> (its rows, time column(s) first, in key order; is a row kept?)
TABLES: dict[str, tuple[str, Callable[[Row], bool]]] = {
    "samples": ("SELECT ts, * FROM samples ORDER BY gpu, ts", lambda r: r[0] >= NOW - 30 * MIN),
    "rollup_1m": ("SELECT ts, * FROM rollup_1m ORDER BY gpu, ts", lambda r: r[0] >= NOW - 2 * HOUR),
    "rollup_1h": ("SELECT ts, * FROM rollup_1h ORDER BY gpu, ts", lambda r: r[0] >= NOW - 5 * HOUR),
    "gpu_processes": (
        "SELECT last_ts, * FROM gpu_processes ORDER BY gpu, pid, first_ts",
        lambda r: r[0] >= NOW - 2 * HOUR,
    ),
    "gpu_events": ("SELECT ts_ms, * FROM gpu_events ORDER BY id", lambda r: r[0] >= T0 + 4 * HOUR),
    "xid_events": (
        "SELECT ts_ms, last_ts_ms, * FROM xid_events ORDER BY id",
        lambda r: r[0] >= T0 + 4 * HOUR or r[1] >= T0 + 4 * HOUR,
    ),
}


async def test_retention_deletes_exactly_what_each_tier_no_longer_keeps(db_path: Path) -> None:
    await fill(db_path)
    before = {table: rows(db_path, sql) for table, (sql, _) in TABLES.items()}
    for table, (_, keep) in TABLES.items():  # each table has rows on both sides of its cutoff
        assert {keep(r) for r in before[table]} == {True, False}, table

    result = await retain(db_path)

    for table, (sql, keep) in TABLES.items():
        kept = [r for r in before[table] if keep(r)]
        assert rows(db_path, sql) == kept, table
        assert result.deleted[table] == len(before[table]) - len(kept), table
    # the burst row that began before the cutoff but ended after it is kept whole
    assert rows(db_path, "SELECT count, xid FROM xid_events WHERE burst = 1") == [(20, 79)]
    assert rows(db_path, "SELECT min(ts) FROM samples") == [(NOW - 30 * MIN,)]  # the cutoff: kept


async def test_retention_with_nothing_to_delete_changes_nothing(db_path: Path) -> None:
    await fill(db_path)
    before = {table: rows(db_path, sql) for table, (sql, _) in TABLES.items()}
    forever = 10_000 * 24 * HOUR
    result = await retain(db_path, RetentionPolicy(forever, forever, forever, forever))
    assert result.total_deleted == 0
    assert result.pages_freed == 0
    assert {table: rows(db_path, sql) for table, (sql, _) in TABLES.items()} == before


def test_a_new_store_uses_incremental_auto_vacuum(db_path: Path) -> None:
    prepare_store(db_path)
    assert pragma(db_path, "auto_vacuum") == 2


async def test_retention_hands_the_freed_pages_back_to_the_disk(db_path: Path) -> None:
    await fill(db_path)
    size, pages = db_path.stat().st_size, pragma(db_path, "page_count")

    result = await retain(db_path)  # its connection checkpoints the WAL as it closes

    assert result.pages_freed > 0
    assert pragma(db_path, "freelist_count") == 0
    assert pragma(db_path, "page_count") <= pages - result.pages_freed
    assert db_path.stat().st_size < size


async def test_retention_deletes_search_an_index_never_scan(db_path: Path) -> None:
    await fill(db_path)
    statements: list[str] = []
    conn = await open_for_writing(db_path)
    try:
        await conn.set_trace_callback(statements.append)
        await apply_retention(conn, POLICY, now_ms=NOW)
    finally:
        await conn.close()
    deletes = [s for s in statements if s.startswith("DELETE")]
    assert len(deletes) == 6 * len(GPUS) + 1  # six per-GPU tables, then xid_events
    with closing(sqlite3.connect(db_path)) as check:
        for sql in deletes:
            plan = " | ".join(str(r[-1]) for r in check.execute(f"EXPLAIN QUERY PLAN {sql}"))
            assert "SEARCH" in plan and "SCAN" not in plan, (sql, plan)


async def test_a_store_made_before_incremental_vacuum_is_converted_keeping_its_data(
    db_path: Path,
) -> None:
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(f"BEGIN;\n{MIGRATIONS[0]}\nPRAGMA user_version = 1;\nCOMMIT;")
        conn.executemany(
            "INSERT INTO xid_events (ts_ms, last_ts_ms, received_ms, kind, xid, message, raw, "
            "source, action, boot_id, seq) VALUES (?, ?, ?, 'xid', 79, ?, ?, 'kmsg', "
            "'RESET_GPU', 'b1', ?)",
            [(T0 + n * MIN, T0 + n * MIN, T0 + n * MIN, f"m{n}", "x" * 400, n) for n in range(480)],
        )
        conn.execute("INSERT INTO watermarks VALUES ('kmsg:b1', 479, ?)", (NOW,))
    assert pragma(db_path, "auto_vacuum") == 0
    before = rows(db_path, "SELECT * FROM xid_events ORDER BY id")

    with capture_logs() as logs:
        prepare_store(db_path)

    assert "store_enabling_incremental_vacuum" in [e["event"] for e in logs]
    assert pragma(db_path, "auto_vacuum") == 2
    assert pragma(db_path, "user_version") == SCHEMA_VERSION
    after = rows(db_path, "SELECT * FROM xid_events ORDER BY id")
    # migration 3 appended `injected` (0 for all), migration 4 namespace, pod, container
    assert [r[:-4] for r in after] == before
    assert {r[-4:] for r in after} == {(0, None, None, None)}
    assert rows(db_path, "SELECT * FROM watermarks") == [("kmsg:b1", 479, NOW)]
    assert rows(db_path, "SELECT count(*) FROM samples") == [(0,)]  # migration 2 ran too
    result = await retain(db_path)  # and retention can now give pages back
    assert result.deleted["xid_events"] == 240
    assert result.pages_freed > 0
    assert pragma(db_path, "freelist_count") == 0


async def test_retention_runs_between_the_writers_commits_without_losing_anything(
    db_path: Path,
) -> None:
    prepare_store(db_path)
    writer = StoreWriter(db_path, flood=FloodPolicy(per_minute=0), batch_max=50)
    await writer.open()
    early, late = ticks(T0, NOW - HOUR), ticks(NOW - HOUR, NOW)
    try:
        task = asyncio.create_task(writer.run())
        writer.put(SampleBatch(T0, gpus=GPUS))
        for tick in early:
            writer.put(tick)
        await wait_until_async(lambda: writer.stats.samples_stored >= len(early) * len(GPUS), 10)
        for n, tick in enumerate(late):  # queued while retention runs
            writer.put(tick)
            writer.put(event(n, ts_ms=NOW - HOUR + n))

        async def retention(conn: aiosqlite.Connection) -> RetentionResult:
            return await apply_retention(conn, POLICY, now_ms=NOW)

        result = await writer.exclusive(retention)
        await writer.close()
        await asyncio.wait_for(task, 10)
    finally:
        await writer.aclose_connection()

    total = (len(early) + len(late)) * len(GPUS)
    assert writer.stats.samples_stored == total
    assert result.deleted["samples"] > 0
    assert rows(db_path, "SELECT count(*) FROM samples") == [(total - result.deleted["samples"],)]
    assert rows(db_path, f"SELECT count(*) FROM samples WHERE ts >= {NOW - 30 * MIN}") == [
        (60 * len(GPUS),)
    ]
    assert rows(db_path, "SELECT count(*) FROM xid_events") == [(len(late),)]
    assert rows(db_path, "PRAGMA integrity_check") == [("ok",)]

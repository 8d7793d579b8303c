"""Query: latency of the history and snapshot queries the MCP tools and the CLI make.

The store is filled to its default-retention size for 8 GPUs (raw 48 h, 1 m rollups 30 d,
1 h rollups 400 d), once per run, in a temporary directory:

- the last 48 h: 8 GPUs at 10 s (``bench.ingest.FleetModel``: every sample field set,
  process lists left out) through the real :class:`store.writer.StoreWriter`, which keeps
  the 1 m and 1 h rollups;
- 48 h .. 30 d back: one synthetic sample per GPU per minute through the writer's own
  rollup code (:class:`store.rollups.RollupAccumulator`), each sample standing for the six
  a 10 s sampler takes (every ``_sum`` and ``_n`` times 6: averages unchanged, rows as wide
  as real ones), upserted with the writer's SQL;
- 30 d .. 400 d back: the same with one sample per GPU per hour (weight 360), 1 h rows only.

Each query is timed through a read-only connection (:func:`store.db.open_reader`, as the
MCP tools read) calling the store's own query functions, ``REPEATS`` times after
``WARMUP`` untimed calls; p50/p95 in ms. Peer for the 30-day history: the same call on a
second store holding only raw rows, one per GPU per minute for 30 days (6x fewer rows than
a 10 s sampler would keep), so the answer comes from scanning raw samples with GROUP BY.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import aiosqlite

from bench._common import log_like_production, percentile, table
from bench.ingest import FleetModel, gpu_infos, ticks, write_batches
from store.db import open_reader, prepare_store
from store.inventory import latest_samples
from store.records import GpuInfo, SampleBatch
from store.rollups import ROLLUP_UPSERTS, RollupAccumulator
from store.samples import _INSERT_SAMPLE
from store.series import metric_series
from store.telemetry import METRICS, raw_row

__all__ = ["main"]

GPUS = 8
NOW_MS = 1_732_406_400_000  # 2024-11-24 00:00 UTC: the store's "now"
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
RAW_SPAN_MS = 48 * HOUR_MS
MINUTE_SPAN_MS = 30 * DAY_MS
HOUR_SPAN_MS = 400 * DAY_MS
SAMPLE_MS = 10_000  # the cadence the synthetic samples stand for
WARMUP = 2
REPEATS = 30
SLOW_REPEATS = 10  # for the peer scans
METRIC = "temperature"


def _spaced(
    infos: tuple[GpuInfo, ...], since_ms: int, until_ms: int, step_ms: int, seed: int
) -> Iterator[SampleBatch]:
    model = FleetModel(infos, seed=seed)
    return ticks(model, (until_ms - since_ms) // step_ms, start_ms=since_ms, interval_ms=step_ms)


def _weighted(
    acc: RollupAccumulator, weight: int, keep: set[str]
) -> dict[str, list[list[int | None]]]:
    """The accumulator's rows with each ``_sum`` and ``_n`` multiplied by ``weight``."""
    out: dict[str, list[list[int | None]]] = {}
    for name, rows in acc.params_by_table().items():
        if name not in keep:
            continue
        for row in rows:
            for k in range(len(METRICS)):
                at = 3 + 4 * k
                row[at + 2] = (row[at + 2] or 0) * weight
                row[at + 3] = (row[at + 3] or 0) * weight
        out[name] = rows
    return out


def _fill_rollups(
    conn: sqlite3.Connection,
    gpu_ids: dict[str, int],
    batches: Iterator[SampleBatch],
    *,
    step_ms: int,
    keep: set[str],
    raw_into: sqlite3.Connection | None = None,
    raw_before_ms: int = 0,
) -> int:
    """Accumulate ``batches`` a day at a time and upsert their rollup rows; returns samples.

    Samples before ``raw_before_ms`` feed the rollups; every sample also goes to
    ``raw_into`` as a raw row when that is given (the peer store).
    """
    weight = step_ms // SAMPLE_MS
    per_day = DAY_MS // step_ms
    acc, count = RollupAccumulator(), 0
    raw: list[list[int | None]] = []

    def flush() -> None:
        conn.execute("BEGIN")
        for name, rows in _weighted(acc, weight, keep).items():
            conn.executemany(ROLLUP_UPSERTS[name], rows)
        conn.execute("COMMIT")
        if raw_into is not None and raw:
            raw_into.execute("BEGIN")
            raw_into.executemany(_INSERT_SAMPLE, raw)
            raw_into.execute("COMMIT")

    for i, batch in enumerate(batches):
        for s in batch.samples:
            gpu, row = gpu_ids[s.uuid], raw_row(s)
            if s.ts_ms < raw_before_ms:
                acc.add(gpu, s.ts_ms, row)
                count += 1
            if raw_into is not None:
                raw.append([gpu, s.ts_ms, *row.values()])
        if i % per_day == per_day - 1:
            flush()
            acc, raw = RollupAccumulator(), []
    flush()
    return count


def _insert_gpus(conn: sqlite3.Connection, infos: tuple[GpuInfo, ...]) -> dict[str, int]:
    conn.executemany(
        "INSERT INTO gpus (id, uuid, idx, name, pci_bus_id, first_seen_ms, last_seen_ms) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(i + 1, g.uuid, g.index, g.name, g.pci_bus_id, 0, NOW_MS) for i, g in enumerate(infos)],
    )
    return {g.uuid: i + 1 for i, g in enumerate(infos)}


@dataclass(frozen=True, slots=True)
class Filled:
    store: Path
    peer: Path
    rows: dict[str, int]
    peer_rows: int
    seconds: float


def fill(tmp: Path) -> Filled:
    """The store at default-retention size, and the raw-only peer (see the module docstring)."""
    started = time.perf_counter()
    infos = gpu_infos(GPUS)
    store, peer = tmp / "store.db", tmp / "peer-raw.db"
    raw_since = NOW_MS - RAW_SPAN_MS
    recent = _spaced(infos, raw_since, NOW_MS, SAMPLE_MS, seed=1)
    asyncio.run(write_batches(store, (replace(b, processes=()) for b in recent)))
    prepare_store(peer)
    with (
        contextlib.closing(sqlite3.connect(store, isolation_level=None)) as conn,
        contextlib.closing(sqlite3.connect(peer, isolation_level=None)) as peer_conn,
    ):
        gpu_ids = {str(u): int(i) for u, i in conn.execute("SELECT uuid, id FROM gpus")}
        if _insert_gpus(peer_conn, infos) != gpu_ids:
            raise RuntimeError("the peer store's GPU ids differ from the store's")
        minute_since = NOW_MS - MINUTE_SPAN_MS
        _fill_rollups(
            conn,
            gpu_ids,
            _spaced(infos, minute_since, NOW_MS, 60_000, seed=2),
            step_ms=60_000,
            keep={"rollup_1m", "rollup_1h"},
            raw_into=peer_conn,
            raw_before_ms=raw_since,
        )
        _fill_rollups(
            conn,
            gpu_ids,
            _spaced(infos, NOW_MS - HOUR_SPAN_MS, minute_since, HOUR_MS, seed=3),
            step_ms=HOUR_MS,
            keep={"rollup_1h"},
            raw_before_ms=minute_since,
        )
        rows = {
            t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
            for t in ("samples", "rollup_1m", "rollup_1h")
        }
        peer_rows = int(peer_conn.execute("SELECT count(*) FROM samples").fetchone()[0])
    return Filled(store, peer, rows, peer_rows, time.perf_counter() - started)


# -- measuring --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    answer: str  # tier and size of what came back
    p50_ms: float
    p95_ms: float


Query = Callable[[aiosqlite.Connection], Awaitable[str]]


async def time_query(path: Path, name: str, query: Query, repeats: int) -> Result:
    conn = await open_reader(path)
    try:
        for _ in range(WARMUP):
            answer = await query(conn)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            answer = await query(conn)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        await conn.close()
    return Result(name, answer, percentile(times, 50), percentile(times, 95))


def series_query(
    since_ms: int, buckets: int, *, gpus: tuple[int, ...] = (), tier: str | None = None
) -> Query:
    async def run(conn: aiosqlite.Connection) -> str:
        series = await metric_series(
            conn,
            METRIC,
            since_ms=since_ms,
            until_ms=NOW_MS,
            buckets=buckets,
            now_ms=NOW_MS,
            gpus=gpus,
            tier=tier,
        )
        points = sum(b.count for s in series for b in s.buckets)
        return (
            f"tier {series[0].tier}, {len(series)} x {len(series[0].buckets)} buckets, "
            f"{points:,} samples"
        )

    return run


async def snapshot(conn: aiosqlite.Connection) -> str:
    latest = await latest_samples(conn)
    return f"{sum(s.sample is not None for s in latest)} GPUs, one row each"


def plan(path: Path, table_name: str) -> str:
    """EXPLAIN QUERY PLAN of the series query on ``table_name``, steps joined by '; '."""
    sql = (
        f"SELECT (ts - 0) / 60000 AS b, min(temp_c) FROM {table_name} "
        "WHERE gpu = 1 AND ts >= 0 AND ts < 1 GROUP BY b"
    )
    if table_name != "samples":
        sql = sql.replace("min(temp_c)", "min(temp_c_min)")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return "; ".join(str(r[3]) for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))


async def measure(filled: Filled) -> list[Result]:
    store, peer = filled.store, filled.peer
    day30, year = NOW_MS - MINUTE_SPAN_MS, NOW_MS - 365 * DAY_MS
    raw48 = NOW_MS - RAW_SPAN_MS
    cases: list[tuple[Path, str, Query, int]] = [
        (
            store,
            "48 h, 1 GPU, 1000 buckets, tier=raw",
            series_query(raw48, 1000, gpus=(0,), tier="raw"),
            REPEATS,
        ),
        (
            store,
            "48 h, 1 GPU, 1000 buckets, auto tier",
            series_query(raw48, 1000, gpus=(0,)),
            REPEATS,
        ),
        (store, "30 d, 8 GPUs, 300 buckets, auto tier", series_query(day30, 300), REPEATS),
        (store, "  same, tier=1m forced", series_query(day30, 300, tier="1m"), SLOW_REPEATS),
        (
            peer,
            "  peer: raw rows at 1/min, GROUP BY",
            series_query(day30, 300, tier="raw"),
            SLOW_REPEATS,
        ),
        (store, "365 d, 8 GPUs, 365 buckets, auto tier", series_query(year, 365), REPEATS),
        (store, "latest snapshot, 8 GPUs", snapshot, REPEATS),
    ]
    return [await time_query(path, name, query, n) for path, name, query, n in cases]


def report(filled: Filled, results: list[Result]) -> None:
    r = filled.rows
    print(
        f"store: {GPUS} GPUs; samples {r['samples']:,} rows (48 h at 10 s, real writer), "
        f"rollup_1m {r['rollup_1m']:,} rows (30 d), rollup_1h {r['rollup_1h']:,} rows (400 d); "
        "rollups older than 48 h from synthetic samples at 1/min (1m) and 1/h (1h) through "
        "RollupAccumulator, sums and counts weighted to a 10 s cadence; "
        f"peer: {filled.peer_rows:,} raw rows at 1/min for 30 d; filled in {filled.seconds:.0f} s"
    )
    print(
        f"metric {METRIC!r} via store.series.metric_series / store.inventory.latest_samples on "
        f"a read-only aiosqlite connection; {REPEATS} calls after {WARMUP} warm-up "
        f"({SLOW_REPEATS} for the forced/peer scans)"
    )
    by_name = {x.name: x for x in results}
    auto30 = by_name["30 d, 8 GPUs, 300 buckets, auto tier"].p50_ms
    rows = []
    for x in results:
        ratio = f"{x.p50_ms / auto30:.0f}x" if x.name.startswith("  ") else ""
        rows.append([x.name, x.answer, f"{x.p50_ms:.2f}", f"{x.p95_ms:.2f}", ratio])
    print(table(["query", "answer", "p50 ms", "p95 ms", "vs auto"], rows))
    for name in ("samples", "rollup_1m", "rollup_1h"):
        print(f"plan on {name}: {plan(filled.store, name)}")


def main() -> None:
    log_like_production()
    print("query: metric history and snapshot latency on a store filled to default retention")
    with tempfile.TemporaryDirectory(prefix="xidwatch-bench-") as tmp:
        filled = fill(Path(tmp))
        report(filled, asyncio.run(measure(filled)))


if __name__ == "__main__":
    main()

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

Peer for the history and the snapshot: Prometheus (Debian's 2.42), the choice users make
for GPU series. The same temperature samples (the store's raw 10 s rows for the last 48 h,
the peer store's 1/min rows before that: 30 days x 8 GPUs) are written as
``xidwatch_gpu_temperature_celsius`` with the daemon's GPU labels and the ServiceMonitor's
``node`` label, loaded with ``promtool tsdb create-blocks-from openmetrics`` in 54 h blocks
(what its own compaction makes at a 31-day retention), and asked through its HTTP API,
``/api/v1/query_range`` for the windows with ``step`` set to the bucket width the store's
auto tier answers with and ``avg_over_time(...[step])`` (so each point averages its bucket,
as a rollup bucket does), ``/api/v1/query`` for the snapshot. Those times include HTTP on
loopback and decoding the JSON answer (one keep-alive connection, ``httpx2``); the store's
include only the query functions on an open connection. ``--no-prometheus`` skips the peer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiosqlite
import httpx2

from bench._common import log_like_production, percentile, table
from bench._prometheus_tsdb import (
    Family,
    Series,
    create_blocks,
    missing_tools,
    prometheus_serving,
    target_labels,
    write_openmetrics,
)
from bench.ingest import FleetModel, gpu_infos, ticks, write_batches
from store.db import open_reader, prepare_store
from store.inventory import latest_samples
from store.records import GpuInfo, SampleBatch
from store.records import Series as StoreSeries
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


async def window_series(
    conn: aiosqlite.Connection,
    since_ms: int,
    buckets: int,
    *,
    gpus: tuple[int, ...] = (),
    tier: str | None = None,
) -> list[StoreSeries]:
    """``METRIC`` from ``since_ms`` to the store's now in ``buckets``, as the tools ask."""
    return await metric_series(
        conn,
        METRIC,
        since_ms=since_ms,
        until_ms=NOW_MS,
        buckets=buckets,
        now_ms=NOW_MS,
        gpus=gpus,
        tier=tier,
    )


def series_query(
    since_ms: int, buckets: int, *, gpus: tuple[int, ...] = (), tier: str | None = None
) -> Query:
    async def run(conn: aiosqlite.Connection) -> str:
        series = await window_series(conn, since_ms, buckets, gpus=gpus, tier=tier)
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


# -- the Prometheus peer ------------------------------------------------------------------

PROM_METRIC = "xidwatch_gpu_temperature_celsius"  # the store's METRIC, as the daemon exports it
PROM_NODE = "gpu-node-000"
PROM_BLOCK_HOURS = 54  # the largest block Prometheus compacts to at PROM_RETENTION
PROM_RETENTION = "31d"  # longer than the 30 days loaded
PROM_AFTER_48H = "48 h, 1 GPU, 1000 buckets, auto tier"
PROM_AFTER_30D = "  peer: raw rows at 1/min, GROUP BY"  # the last row of the 30-day group
PROM_AFTER_SNAPSHOT = "latest snapshot, 8 GPUs"


@dataclass(frozen=True, slots=True)
class Loaded:
    """What the Prometheus peer holds, and how long making its blocks took."""

    samples: int
    seconds: float  # writing OpenMetrics and promtool's blocks


@dataclass(frozen=True, slots=True)
class Grid:
    """The buckets the store's auto tier answers a window with."""

    first_ms: int
    step_ms: int
    buckets: int


def _temperature_series(filled: Filled) -> Iterator[Series]:
    """Each GPU's temperature samples, as the store (last 48 h) and the peer store (the 1/min
    samples before) hold them."""
    raw_since = NOW_MS - RAW_SPAN_MS
    rows = "SELECT ts, temp_c FROM samples WHERE gpu = ? AND ts >= ? AND ts < ? ORDER BY ts"
    with (
        contextlib.closing(sqlite3.connect(filled.store)) as store,
        contextlib.closing(sqlite3.connect(filled.peer)) as peer,
    ):
        gpus = store.execute("SELECT id, idx, uuid, pci_bus_id, name FROM gpus ORDER BY id")
        for gpu_id, idx, uuid, pci, model in gpus.fetchall():
            older = peer.execute(rows, (gpu_id, 0, raw_since)).fetchall()
            recent = store.execute(rows, (gpu_id, raw_since, NOW_MS + 1)).fetchall()
            gpu = {"gpu": str(idx), "uuid": uuid, "pci_bus_id": pci, "model": model}
            yield Series({**gpu, **target_labels(PROM_NODE)}, [*older, *recent])


def load_prometheus(filled: Filled, root: Path) -> Loaded:
    """The store's temperature samples as Prometheus TSDB blocks in ``root / "tsdb"``."""
    started = time.perf_counter()
    text = root / "temperature.om"
    root.mkdir()
    family = Family(PROM_METRIC, "gauge", _temperature_series(filled))
    samples = write_openmetrics(text, [family])
    create_blocks(text, root / "tsdb", block_hours=PROM_BLOCK_HOURS)
    text.unlink()
    return Loaded(samples, time.perf_counter() - started)


async def auto_grid(path: Path, since_ms: int, buckets: int, gpus: tuple[int, ...] = ()) -> Grid:
    conn = await open_reader(path)
    try:
        series = await window_series(conn, since_ms, buckets, gpus=gpus)
    finally:
        await conn.close()
    return Grid(series[0].buckets[0].ts_ms, series[0].step_ms, len(series[0].buckets))


def _api(http: httpx2.Client, path: str, params: dict[str, str]) -> Any:
    """The answer's ``data``, over the kept-alive connection (``tests.prometheus_server.api``
    connects anew for each call, which would put a connect in every timing)."""
    body = http.get(path, params=params).json()
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus {path} {params}: {body.get('error')}")
    return body["data"]


def time_prometheus(http: httpx2.Client, name: str, path: str, params: dict[str, str]) -> Result:
    """``REPEATS`` GETs of ``path`` after ``WARMUP``; the answer's size from one more with
    the query's statistics (untimed)."""
    data = _api(http, path, {**params, "stats": "all"})
    read = data.get("stats", {}).get("samples", {}).get("totalQueryableSamples")
    series = data["result"]
    points = sum(len(s.get("values", ())) or 1 for s in series)
    answer = f"{len(series)} x {points // max(1, len(series))} points"
    answer += f", {read:,} samples" if isinstance(read, int) else ""
    for _ in range(WARMUP):
        _api(http, path, params)
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        _api(http, path, params)
        times.append((time.perf_counter() - started) * 1000)
    return Result(name, answer, percentile(times, 50), percentile(times, 95))


def _range_params(grid: Grid, selector: str) -> dict[str, str]:
    """Each point the samples of one store bucket, [start, end): Prometheus 2's ranges hold
    both ends, so the point is 1 ms before the bucket's end and its range 1 ms short."""
    return {
        "query": f"avg_over_time({PROM_METRIC}{selector}[{grid.step_ms - 1}ms])",
        "start": f"{(grid.first_ms + grid.step_ms - 1) / 1000:.3f}",
        "end": f"{(grid.first_ms + grid.buckets * grid.step_ms - 1) / 1000:.3f}",
        "step": f"{grid.step_ms / 1000:g}",
    }


def measure_prometheus(url: str, filled: Filled) -> dict[str, Result]:
    """The peer's answers, keyed by the store's row they are printed under."""
    grid48 = asyncio.run(auto_grid(filled.store, NOW_MS - RAW_SPAN_MS, 1000, gpus=(0,)))
    grid30 = asyncio.run(auto_grid(filled.store, NOW_MS - MINUTE_SPAN_MS, 300))
    node = f'node="{PROM_NODE}"'
    cases = {
        PROM_AFTER_48H: (grid48, f'{{{node},gpu="0"}}'),
        PROM_AFTER_30D: (grid30, f"{{{node}}}"),
    }
    out = {}
    with httpx2.Client(base_url=url, timeout=120) as http:
        for after, (grid, selector) in cases.items():
            name = f"  Prometheus query_range, step {_duration(grid.step_ms)}"
            out[after] = time_prometheus(
                http, name, "/api/v1/query_range", _range_params(grid, selector)
            )
        instant = {"query": f"{PROM_METRIC}{{{node}}}", "time": f"{NOW_MS / 1000:.3f}"}
        name = "  Prometheus instant query"
        out[PROM_AFTER_SNAPSHOT] = time_prometheus(http, name, "/api/v1/query", instant)
    return out


def _duration(ms: int) -> str:
    return f"{ms // HOUR_MS} h" if ms % HOUR_MS == 0 else f"{ms / 60_000:g} min"


# -- report -------------------------------------------------------------------------------


def report(
    filled: Filled,
    results: list[Result],
    peer: dict[str, Result],
    loaded: Loaded | None,
    skipped: str | None,
) -> None:
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
    if loaded is not None:
        print(
            f"Prometheus: {loaded.samples:,} samples of {PROM_METRIC} (the store's 48 h at 10 s "
            f"and the peer's 1/min before, 30 d), loaded by promtool in {PROM_BLOCK_HOURS} h "
            f"blocks in {loaded.seconds:.0f} s, retention {PROM_RETENTION}; asked over HTTP "
            f"(JSON decoded), {REPEATS} calls after {WARMUP} warm-up; query_range step = the "
            "store's auto-tier bucket, avg_over_time over its samples; "
            "samples = totalQueryableSamples"
        )
    else:
        print(f"Prometheus peer skipped: {skipped}")
    rows, base = [], 1.0
    for x in results:
        for y in [x] + ([peer[x.name]] if x.name in peer else []):
            if not y.name.startswith("  "):
                base = y.p50_ms
            ratio = f"{y.p50_ms / base:.1f}x" if y.name.startswith("  ") else ""
            rows.append([y.name, y.answer, f"{y.p50_ms:.2f}", f"{y.p95_ms:.2f}", ratio])
    print(table(["query", "answer", "p50 ms", "p95 ms", "vs store"], rows))
    if loaded is not None:
        print("365 d: no Prometheus row, it holds the 30 days loaded")
    for name in ("samples", "rollup_1m", "rollup_1h"):
        print(f"plan on {name}: {plan(filled.store, name)}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.query")
    parser.add_argument("--no-prometheus", action="store_true", help="skip the Prometheus peer")
    args = parser.parse_args(argv)
    log_like_production()
    print("query: metric history and snapshot latency on a store filled to default retention")
    skipped = "--no-prometheus" if args.no_prometheus else missing_tools()
    with tempfile.TemporaryDirectory(prefix="xidwatch-bench-") as tmp:
        filled = fill(Path(tmp))
        results = asyncio.run(measure(filled))
        peer: dict[str, Result] = {}
        loaded = None
        if skipped is None:
            root = Path(tmp) / "prometheus"
            loaded = load_prometheus(filled, root)
            with prometheus_serving(root, retention=PROM_RETENTION) as url:
                peer = measure_prometheus(url, filled)
        report(filled, results, peer, loaded, skipped)


if __name__ == "__main__":
    main()

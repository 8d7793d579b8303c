"""Ingest: sample rows per second through the store writer, and bytes on disk per GPU per day.

What is measured:

- throughput: ``TICKS`` sampling ticks of 8 GPUs (``SampleBatch`` of 8 ``GpuSample`` with
  every field set to H100-like values, ticks 10 s apart, one compute process per busy GPU)
  queued into a fresh :class:`store.writer.StoreWriter` and drained (production defaults:
  group commit of up to 1000 queued items, WAL, ``synchronous=NORMAL``). Everything the
  writer does is inside the time: converting samples, accumulating the 1 m and 1 h rollups
  and upserting them, the inventory's ``last_seen``, the process rows, the commits.
  Peers, timed in the same rounds on the same rows (order rotated per round):

  - the same writer fed the same ticks with empty process lists (the writer stores a
    tick's processes one statement each, so this isolates that cost);
  - the writer's own SQL run synchronously with ``sqlite3`` (raw rows and the rollup rows
    for each 1000-tick chunk computed before the clock starts): the SQLite share of the
    writer's cost, rollups included;
  - ``sqlite3`` ``executemany`` of the same raw rows into a bare ``samples`` table (same
    columns and primary key, no rollups), 8000 rows per transaction: the floor.

  One tick per transaction (the daemon's cadence: a commit every tick) is timed too, as
  milliseconds from ``put`` to commit.

- size on disk: one GPU written through the real writer into a fresh store (rollups kept
  by the writer) for ``SIZE_DAYS`` days at 10 s and ``SIZE_1S_HOURS`` hours at 1 s; each
  table's bytes from SQLite's ``dbstat`` (sum of ``pgsize``: whole pages, as on disk)
  divided by the span -> bytes per GPU per day per tier, and at the default retention (raw
  48 h, 1 m 30 d, 1 h 400 d) the steady-state file for 8 GPUs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bench._common import Spread, fmt_int, log_like_production, percentile, table
from store.db import prepare_store
from store.records import GpuInfo, GpuProcess, GpuSample, SampleBatch
from store.retention import RetentionPolicy
from store.rollups import ROLLUP_UPSERTS, RollupAccumulator
from store.samples import _INSERT_SAMPLE
from store.telemetry import RAW_COLUMNS, raw_row
from store.writer import StoreWriter

__all__ = ["FleetModel", "SizeFigures", "main", "measure_sizes", "ticks"]

GPUS = 8
TICKS = 4_000  # x 8 GPUs = 32,000 rows, 11 h of ticks
INTERVAL_MS = 10_000
ROUNDS = 3
CHUNK_TICKS = 1_000  # the writer's default batch_max: queued ticks per transaction
PER_TICK_COMMITS = 200
SIZE_DAYS = 4
SIZE_1S_HOURS = 6
START_MS = 1_732_406_400_000  # 2024-11-24 00:00 UTC
SEED = 20_241_124
QUEUE_HIGH = 5_000  # the feeder waits above this queue depth (the writer sheds at 10,000)

_MIB = 1 << 20
H100_TOTAL = 81_559 * _MIB
_POWER_CAP = 0x4
_IDLE = 0x1
_DAY_MS = 86_400_000


def gpu_infos(n: int, *, node: int = 0) -> tuple[GpuInfo, ...]:
    """Inventory for ``n`` H100 boards as NVML discovery reports them (distinct per node)."""
    return tuple(
        GpuInfo(
            uuid=f"GPU-{node:04x}{i:04x}-5c1e-4b2a-9d3f-{0x3B00 + i:012x}",
            index=i,
            name="NVIDIA H100 80GB HBM3",
            pci_bus_id=f"00000000:{0x18 + 0x10 * i:02X}:00.0",
            serial=str(1_654_923_000_000 + node * 1000 + i),
            driver_version="550.54.15",
            cuda_version="12.4",
            slowdown_temp_c=87,
            shutdown_temp_c=92,
            power_limit_default_w=700.0,
            power_limit_min_w=200.0,
            power_limit_max_w=700.0,
            memory_total_bytes=H100_TOTAL,
            ecc_enabled=True,
            mig_enabled=False,
        )
        for i in range(n)
    )


class FleetModel:
    """H100-like readings: jobs start and end, power and temperature follow utilization,
    counters creep up at the rates real fleets show (most GPUs never move)."""

    def __init__(self, infos: Sequence[GpuInfo], seed: int = SEED) -> None:
        self.infos = tuple(infos)
        self._rng = random.Random(seed)
        n = len(self.infos)
        self._busy = [self._rng.random() < 0.8 for _ in range(n)]
        self._pid = [100_000 + 1000 * i for i in range(n)]
        self._temp = [45.0] * n
        self._ecc = [[0, self._rng.randrange(13)] for _ in range(n)]
        self._replays = [0] * n
        self._ecc_rate = [self._rng.choice((0.0, 0.0, 2e-4, 1e-3)) for _ in range(n)]

    def tick(self, ts_ms: int, announce: bool = False) -> SampleBatch:
        """One tick of every GPU at ``ts_ms``."""
        rng = self._rng
        samples: list[GpuSample] = []
        processes: list[GpuProcess] = []
        for i, info in enumerate(self.infos):
            if rng.random() < 1 / 720:  # a job starts or ends about every 2 h
                self._busy[i] = not self._busy[i]
                self._pid[i] += 7
            busy = self._busy[i]
            util = min(100, max(0, round(rng.gauss(94, 5)))) if busy else 0
            power = rng.uniform(560.0, 699.9) if busy else rng.uniform(68.0, 75.0)
            self._temp[i] += ((30 + power * 0.055) - self._temp[i]) * 0.2 + rng.gauss(0, 0.3)
            capped = busy and power > 690
            if rng.random() < self._ecc_rate[i]:
                self._ecc[i][0] += 1
                self._ecc[i][1] += 1
            if rng.random() < 5e-5:
                self._replays[i] += 1
            used = rng.randrange(71_000, 78_000) * _MIB if busy else 512 * _MIB
            samples.append(
                GpuSample(
                    uuid=info.uuid,
                    ts_ms=ts_ms + rng.randrange(40),  # the tick's reads take a few ms
                    temperature_c=round(self._temp[i]),
                    power_w=round(power, 3),
                    power_limit_w=700.0,
                    sm_clock_mhz=(1755 + 15 * rng.randrange(16)) if busy else 345,
                    memory_clock_mhz=2619,
                    gpu_util_pct=util,
                    memory_util_pct=round(util * 0.45 + rng.uniform(-4, 4)) if busy else 0,
                    memory_used_bytes=used,
                    memory_total_bytes=H100_TOTAL,
                    ecc_corrected_volatile=self._ecc[i][0],
                    ecc_uncorrected_volatile=0,
                    ecc_corrected_aggregate=self._ecc[i][1],
                    ecc_uncorrected_aggregate=0,
                    remapped_rows_corrected=0,
                    remapped_rows_uncorrected=0,
                    remap_pending=False,
                    remap_failure=False,
                    clocks_event_reasons=_POWER_CAP if capped else (0 if busy else _IDLE),
                    pcie_replays=self._replays[i],
                    nvlink_active=18,
                    nvlink_errors=0,
                    process_count=1 if busy else 0,
                )
            )
            if busy:
                processes.append(GpuProcess(info.uuid, self._pid[i], used - 512 * _MIB, "python3"))
        return SampleBatch(ts_ms, tuple(samples), tuple(processes), self.infos if announce else ())


def ticks(
    model: FleetModel, count: int, *, start_ms: int, interval_ms: int
) -> Iterator[SampleBatch]:
    """``count`` ticks ``interval_ms`` apart; the first announces the GPUs."""
    for i in range(count):
        yield model.tick(start_ms + i * interval_ms, announce=i == 0)


# -- throughput ------------------------------------------------------------------------


async def write_batches(path: Path, batches: Iterable[SampleBatch]) -> tuple[float, StoreWriter]:
    """Seconds for a fresh writer to store every batch (queued, then drained)."""
    prepare_store(path)
    writer = StoreWriter(path)
    await writer.open()
    started = time.perf_counter()
    task = asyncio.create_task(writer.run())
    for batch in batches:
        while writer.queue_depth >= QUEUE_HIGH:
            await asyncio.sleep(0.001)
        writer.put(batch)
    await writer.close()
    await task
    elapsed = time.perf_counter() - started
    await writer.aclose_connection()
    if writer.stats.samples_shed or writer.stats.samples_out_of_order:
        raise RuntimeError(f"writer dropped samples: {writer.stats}")
    return elapsed, writer


async def per_tick_commits(path: Path, batches: Sequence[SampleBatch]) -> list[float]:
    """Milliseconds from ``put`` to commit, one tick per transaction."""
    prepare_store(path)
    committed = asyncio.Event()
    writer = StoreWriter(path, on_commit=lambda _events: committed.set())
    await writer.open()
    task = asyncio.create_task(writer.run())
    out = []
    for batch in batches:
        committed.clear()
        started = time.perf_counter()
        writer.put(batch)
        await committed.wait()
        out.append((time.perf_counter() - started) * 1000)
    await writer.close()
    await task
    await writer.aclose_connection()
    return out


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


@dataclass(frozen=True, slots=True)
class _Chunk:
    """One transaction's worth of precomputed rows."""

    raw: list[list[int | None]]
    rollups: dict[str, list[list[int | None]]]


def precompute(batches: Sequence[SampleBatch], gpu_ids: dict[str, int]) -> list[_Chunk]:
    """Raw rows and rollup rows per ``CHUNK_TICKS`` ticks, as the writer would compute them."""
    chunks = []
    for at in range(0, len(batches), CHUNK_TICKS):
        rows: list[list[int | None]] = []
        acc = RollupAccumulator()
        for batch in batches[at : at + CHUNK_TICKS]:
            for s in batch.samples:
                gpu = gpu_ids[s.uuid]
                row = raw_row(s)
                rows.append([gpu, s.ts_ms, *row.values()])
                acc.add(gpu, s.ts_ms, row)
        chunks.append(_Chunk(rows, acc.params_by_table()))
    return chunks


def sync_writer_sql(path: Path, chunks: Sequence[_Chunk]) -> float:
    """The writer's raw insert and rollup upserts with plain sqlite3, chunk per transaction."""
    prepare_store(path)
    with contextlib.closing(_connect(path)) as conn:
        conn.executemany(
            "INSERT INTO gpus (id, uuid, idx, name, pci_bus_id, first_seen_ms, last_seen_ms) "
            "VALUES (?, ?, ?, 'H100', ?, 0, 0)",
            [
                (i + 1, info.uuid, info.index, info.pci_bus_id)
                for i, info in enumerate(gpu_infos(GPUS))
            ],
        )
        started = time.perf_counter()
        for chunk in chunks:
            conn.execute("BEGIN")
            conn.executemany(_INSERT_SAMPLE, chunk.raw)
            for name, params in chunk.rollups.items():
                conn.executemany(ROLLUP_UPSERTS[name], params)
            conn.execute("COMMIT")
        return time.perf_counter() - started


def bare_executemany(path: Path, chunks: Sequence[_Chunk]) -> float:
    """The same raw rows into a bare ``samples`` table, no rollups, chunk per transaction."""
    columns = ", ".join(f"{c} INTEGER" for c, _ in RAW_COLUMNS)
    marks = ", ".join("?" * (len(RAW_COLUMNS) + 2))
    with contextlib.closing(_connect(path)) as conn:
        conn.execute(
            f"CREATE TABLE samples (gpu INTEGER NOT NULL, ts INTEGER NOT NULL, {columns}, "
            "PRIMARY KEY (gpu, ts)) WITHOUT ROWID"
        )
        started = time.perf_counter()
        for chunk in chunks:
            conn.execute("BEGIN")
            conn.executemany(f"INSERT INTO samples VALUES ({marks})", chunk.raw)
            conn.execute("COMMIT")
        return time.perf_counter() - started


WRITER = "xidwatch StoreWriter (rollups, inventory, processes)"
NO_PROCS = "xidwatch StoreWriter, the same ticks without process lists"
SYNC_SQL = "sqlite3, the writer's SQL (raw + 1m/1h rollup upserts)"
BARE = "sqlite3 executemany, bare samples table, no rollups"


def measure_throughput(tmp: Path) -> tuple[dict[str, list[float]], list[float], Path]:
    """Rows/s per path and round; per-tick commit ms; the last writer store (8 GPUs)."""
    model = FleetModel(gpu_infos(GPUS))
    batches = list(ticks(model, TICKS, start_ms=START_MS, interval_ms=INTERVAL_MS))
    rows = sum(len(b.samples) for b in batches)
    gpu_ids = {info.uuid: i + 1 for i, info in enumerate(gpu_infos(GPUS))}
    chunks = precompute(batches, gpu_ids)
    bare_ticks = [replace(b, processes=()) for b in batches]
    runs: dict[str, Callable[[Path], float]] = {
        WRITER: lambda p: asyncio.run(write_batches(p, batches))[0],
        NO_PROCS: lambda p: asyncio.run(write_batches(p, bare_ticks))[0],
        SYNC_SQL: lambda p: sync_writer_sql(p, chunks),
        BARE: lambda p: bare_executemany(p, chunks),
    }
    rates: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    last_writer_db = tmp / "writer-0.db"
    for r in range(ROUNDS):
        for k, name in enumerate(names[r % len(names) :] + names[: r % len(names)]):
            db = tmp / f"tp-{r}-{k}.db"
            gc.collect()
            rates[name].append(rows / runs[name](db))
            if name == WRITER:
                last_writer_db = db
    later = FleetModel(gpu_infos(GPUS), seed=SEED + 1)
    cadence = list(ticks(later, PER_TICK_COMMITS, start_ms=START_MS, interval_ms=INTERVAL_MS))
    per_tick = asyncio.run(per_tick_commits(tmp / "per-tick.db", cadence))
    return rates, per_tick[10:], last_writer_db  # the first commits warm the caches


# -- size on disk -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TableSize:
    name: str
    bytes: int
    rows: int


def table_sizes(path: Path) -> dict[str, TableSize]:
    """Bytes (whole pages) and rows per table and index, from ``dbstat``.

    Where SQLite was built without ``dbstat``, each table is measured as the growth of a
    ``VACUUM INTO`` copy that keeps only that table (pages repacked: a slight underestimate).
    """
    with contextlib.closing(sqlite3.connect(path)) as conn:
        kinds = dict(
            conn.execute("SELECT name, type FROM sqlite_schema WHERE type IN ('table', 'index')")
        )
        tables = [n for n, kind in kinds.items() if kind == "table"]
        counts = {n: int(conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0]) for n in tables}
        try:
            query = "SELECT name, sum(pgsize) FROM dbstat GROUP BY name"
            stat = dict(conn.execute(query).fetchall())
        except sqlite3.OperationalError:  # built without SQLITE_ENABLE_DBSTAT_VTAB
            stat = _sizes_by_copy(conn, path, tables)
    return {n: TableSize(n, int(stat.get(n, 0)), counts.get(n, 0)) for n in kinds}


def _sizes_by_copy(conn: sqlite3.Connection, path: Path, tables: list[str]) -> dict[str, int]:
    def copy_bytes(keep: str | None) -> int:
        copy = path.with_name(f"{path.stem}-copy.db")
        copy.unlink(missing_ok=True)
        conn.execute("VACUUM INTO ?", (str(copy),))
        with contextlib.closing(sqlite3.connect(copy, isolation_level=None)) as c:
            for t in tables:
                if t != keep:
                    c.execute(f'DELETE FROM "{t}"')
            c.execute("VACUUM")
            pages, size = c.execute("SELECT * FROM pragma_page_count, pragma_page_size").fetchone()
        copy.unlink()
        return int(pages * size)

    empty = copy_bytes(None)
    return {t: copy_bytes(t) - empty for t in tables}


@dataclass(frozen=True, slots=True)
class SizeFigures:
    """Bytes per GPU per day by tier, and what 8 GPUs hold at the default retention."""

    per_day: dict[str, float]  # tier -> bytes per GPU per day
    per_row: dict[str, float]  # tier -> bytes per row
    rows_per_day: dict[str, float]
    processes_per_day: float
    file_bytes_per_day: float  # the whole 10 s file over its span
    raw_1s_per_day: float
    raw_1s_per_row: float
    raw_8gpu_per_row: float
    dbstat: bool


def _span_days(count: int, interval_ms: int) -> float:
    return count * interval_ms / _DAY_MS


def _file_bytes(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        return int(pages * conn.execute("PRAGMA page_size").fetchone()[0])


def measure_sizes(tmp: Path, eight_gpu_db: Path) -> SizeFigures:
    """One GPU through the real writer at 10 s and at 1 s; per-table bytes per day."""
    infos = gpu_infos(1)
    n10 = SIZE_DAYS * _DAY_MS // INTERVAL_MS
    db10 = tmp / "size-10s.db"
    asyncio.run(
        write_batches(
            db10, ticks(FleetModel(infos), n10, start_ms=START_MS, interval_ms=INTERVAL_MS)
        )
    )
    sizes = table_sizes(db10)
    days = _span_days(n10, INTERVAL_MS)
    tiers = {"raw": "samples", "1m": "rollup_1m", "1h": "rollup_1h"}
    per_day = {t: sizes[name].bytes / days for t, name in tiers.items()}
    per_row = {t: sizes[name].bytes / max(1, sizes[name].rows) for t, name in tiers.items()}
    rows_per_day = {t: sizes[name].rows / days for t, name in tiers.items()}
    procs = sum(s.bytes for n, s in sizes.items() if n.startswith("gpu_processes")) / days

    n1 = SIZE_1S_HOURS * 3_600
    db1 = tmp / "size-1s.db"
    asyncio.run(
        write_batches(db1, ticks(FleetModel(infos), n1, start_ms=START_MS, interval_ms=1_000))
    )
    raw1 = table_sizes(db1)["samples"]
    eight = table_sizes(eight_gpu_db)["samples"]
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        try:
            conn.execute("SELECT count(*) FROM dbstat").fetchone()
            has_dbstat = True
        except sqlite3.OperationalError:
            has_dbstat = False
    return SizeFigures(
        per_day=per_day,
        per_row=per_row,
        rows_per_day=rows_per_day,
        processes_per_day=procs,
        file_bytes_per_day=_file_bytes(db10) / days,
        raw_1s_per_day=raw1.bytes / _span_days(n1, 1_000),
        raw_1s_per_row=raw1.bytes / raw1.rows,
        raw_8gpu_per_row=eight.bytes / eight.rows,
        dbstat=has_dbstat,
    )


def steady_state_bytes(sizes: SizeFigures, policy: RetentionPolicy, gpus: int) -> dict[str, float]:
    """Bytes each tier holds for ``gpus`` GPUs once retention has caught up."""
    keep_days = {t: policy.tier_ms(t) / _DAY_MS for t in ("raw", "1m", "1h")}
    out = {t: sizes.per_day[t] * keep_days[t] * gpus for t in keep_days}
    out["processes"] = sizes.processes_per_day * policy.minute_ms / _DAY_MS * gpus
    return out


# -- report -----------------------------------------------------------------------------


def report_throughput(rates: dict[str, list[float]], per_tick_ms: list[float]) -> None:
    print(
        f"throughput: {TICKS:,} ticks x {GPUS} GPUs = {TICKS * GPUS:,} sample rows (10 s apart, "
        f"every field set), {ROUNDS} rounds, median [min .. max]"
    )
    bare = Spread.of(rates[BARE]).median
    rows = []
    for name, values in rates.items():
        s = Spread.of(values)
        rows.append([name, s.show(), f"{bare / s.median:.1f}x" if name != BARE else "1.0x"])
    print(table(["path", "rows/s", "time vs bare"], rows))
    p50, p95 = percentile(per_tick_ms, 50), percentile(per_tick_ms, 95)
    print(
        f"one tick per transaction (the daemon's cadence), {len(per_tick_ms)} ticks of {GPUS} "
        f"GPUs: put -> commit p50 {p50:.2f} ms, p95 {p95:.2f} ms"
    )


def _kb(n: float) -> str:
    return f"{n / 1024:,.1f}"


def report_sizes(sizes: SizeFigures) -> None:
    how = "dbstat sum(pgsize)" if sizes.dbstat else "VACUUM INTO copies (no dbstat)"
    print(
        f"\nsize on disk: 1 GPU through StoreWriter, {SIZE_DAYS} days at 10 s and "
        f"{SIZE_1S_HOURS} h at 1 s; bytes per table from {how}"
    )
    policy = RetentionPolicy()
    rows = [
        [
            "raw at 10 s",
            fmt_int(sizes.rows_per_day["raw"]),
            f"{sizes.per_row['raw']:.0f}",
            _kb(sizes.per_day["raw"]),
            f"{policy.raw_ms / _DAY_MS:g} d",
        ],
        [
            "raw at 1 s",
            fmt_int(86_400),
            f"{sizes.raw_1s_per_row:.0f}",
            _kb(sizes.raw_1s_per_day),
            f"{policy.raw_ms / _DAY_MS:g} d",
        ],
        [
            "1m rollup",
            fmt_int(sizes.rows_per_day["1m"]),
            f"{sizes.per_row['1m']:.0f}",
            _kb(sizes.per_day["1m"]),
            f"{policy.minute_ms / _DAY_MS:g} d",
        ],
        [
            "1h rollup",
            fmt_int(sizes.rows_per_day["1h"]),
            f"{sizes.per_row['1h']:.0f}",
            _kb(sizes.per_day["1h"]),
            f"{policy.hour_ms / _DAY_MS:g} d",
        ],
    ]
    print(table(["tier", "rows/GPU/day", "bytes/row", "KiB/GPU/day", "kept"], rows))
    print(
        f"whole file at 10 s (all tables, indexes, schema): {_kb(sizes.file_bytes_per_day)} "
        f"KiB/GPU/day; process rows {_kb(sizes.processes_per_day)} KiB/GPU/day; raw rows "
        f"written by 8 interleaved GPUs take {sizes.raw_8gpu_per_row:.0f} bytes/row "
        f"(1 GPU: {sizes.per_row['raw']:.0f})"
    )
    steady = steady_state_bytes(sizes, policy, GPUS)
    total = sum(steady.values())
    parts = ", ".join(f"{k} {v / 1e6:,.1f}" for k, v in steady.items())
    print(
        f"steady state at the default retention, {GPUS} GPUs at 10 s: {total / 1e6:,.1f} MB "
        f"({parts} MB)"
    )
    raw_1s = sizes.raw_1s_per_day * policy.raw_ms / _DAY_MS * GPUS
    print(
        f"  sampling at 1 s instead: {(total - steady['raw'] + raw_1s) / 1e6:,.1f} MB "
        f"(raw {raw_1s / 1e6:,.1f} MB; rollups as at 10 s, their sums a byte or so wider)"
    )


def main() -> None:
    log_like_production()
    print("ingest: telemetry through the store writer, and what it costs on disk")
    with tempfile.TemporaryDirectory(prefix="xidwatch-bench-") as tmp:
        rates, per_tick, eight_db = measure_throughput(Path(tmp))
        report_throughput(rates, per_tick)
        report_sizes(measure_sizes(Path(tmp), eight_db))


if __name__ == "__main__":
    main()

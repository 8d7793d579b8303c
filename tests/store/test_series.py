"""Bucketed metric series: which tier answers, window checks, empty buckets, GPU selectors."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from store.db import prepare_store
from store.errors import InvalidQueryError
from store.inventory import latest_samples
from store.records import Bucket, GpuInfo, GpuSample, SampleBatch
from store.retention import RetentionPolicy
from store.series import (
    MAX_BUCKETS,
    choose_tier,
    latest_reading,
    metric_series,
    plan_window,
    sample_interval_ms,
    series_report,
)
from store.trend import Threshold
from tests.store.helpers import reading, write_all

T0 = 1_800_000_000_000  # on an hour boundary
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
NOW = T0 + HOUR


def gpu(index: int, uuid: str, pci: str) -> GpuInfo:
    return GpuInfo(uuid=uuid, index=index, name="NVIDIA H100 80GB HBM3", pci_bus_id=pci)


GPU0 = gpu(0, "GPU-0a1b2c3d-1111-4000-8000-000000000000", "00000000:3B:00.0")
GPU1 = gpu(1, "GPU-9f8e7d6c-2222-4000-8000-000000000000", "00000000:86:00.0")
GPU2 = gpu(2, "GPU-0a1b2c3d-3333-4000-8000-000000000000", "00000000:DB:00.0")


def one_minute() -> list[SampleBatch]:
    """Four ticks in the minute from T0, for all three GPUs (GPU 1 and 2 run cooler)."""
    temps, powers = (50, 60, 70, 60), (250.5, None, 251.5, None)
    reasons = (0x4, 0, 0x80, 0x40)  # power cap, none, power brake, hardware thermal
    ticks = [SampleBatch(T0, gpus=(GPU0, GPU1, GPU2))]
    for k in range(4):
        ts = T0 + k * 15_000
        ticks.append(
            SampleBatch(
                ts,
                (
                    GpuSample(
                        GPU0.uuid,
                        ts,
                        temperature_c=temps[k],
                        power_w=powers[k],
                        clocks_event_reasons=reasons[k],
                    ),
                    GpuSample(GPU1.uuid, ts, temperature_c=temps[k] - 10),
                    GpuSample(GPU2.uuid, ts, temperature_c=temps[k] - 20),
                ),
            )
        )
    return ticks


@pytest.fixture
async def store(db_path: Path) -> Path:
    await write_all(db_path, one_minute())
    return db_path


# -- which tier answers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("since", "until", "buckets", "tier"),
    [
        (NOW - HOUR, NOW, 120, "raw"),  # 30 s buckets: finer than a minute
        (NOW - HOUR, NOW, 60, "1m"),  # 1 min buckets: the 1 m tier is the coarsest that fits
        (NOW - HOUR, NOW, 1, "1h"),  # one bucket of exactly an hour: the 1 h step fits
        (NOW - 7 * DAY, NOW, 100, "1h"),
        (NOW - 50 * HOUR, NOW - 49 * HOUR, 120, "1m"),  # raw is gone after 48 h: coarser
        (NOW - 40 * DAY, NOW - 40 * DAY + HOUR, 60, "1h"),  # 1 m is gone after 30 d
        (NOW - 500 * DAY, NOW - 499 * DAY, 24, "1h"),  # nothing keeps it: the coarsest
    ],
    ids=["30s", "1min", "1x1h", "week", "past-raw", "past-1m", "past-all"],
)
def test_the_coarsest_tier_fine_enough_and_still_kept_answers(
    since: int, until: int, buckets: int, tier: str
) -> None:
    chosen = choose_tier(since, until, buckets, now_ms=NOW, retention=RetentionPolicy())
    assert chosen.name == tier


def test_a_shorter_retention_pushes_a_window_to_a_coarser_tier() -> None:
    since, until = NOW - 2 * HOUR, NOW - HOUR
    default = choose_tier(since, until, 120, now_ms=NOW, retention=RetentionPolicy())
    short = choose_tier(since, until, 120, now_ms=NOW, retention=RetentionPolicy(raw_ms=HOUR))
    assert (default.name, short.name) == ("raw", "1m")


async def test_a_series_says_which_tier_and_step_answered(store: Path) -> None:
    since = NOW - 50 * HOUR
    async with reading(store) as conn:
        (series,) = await metric_series(
            conn,
            "temperature",
            since_ms=since,
            until_ms=since + HOUR,
            buckets=120,
            now_ms=NOW,
            gpus=[0],
        )
    assert (series.tier, series.step_ms, len(series.buckets)) == ("1m", MIN, 60)
    assert (series.since_ms, series.until_ms) == (since, since + HOUR)


async def test_a_forced_tier_is_used_even_when_coarser_would_do(store: Path) -> None:
    async with reading(store) as conn:
        (series,) = await metric_series(
            conn,
            "temperature",
            since_ms=NOW - 7 * DAY,
            until_ms=NOW,
            buckets=100,
            now_ms=NOW,
            gpus=[0],
            tier="raw",
        )
    assert (series.tier, series.step_ms) == ("raw", 7 * DAY // 100)


def test_the_window_is_aligned_to_the_tier_step_in_whole_buckets() -> None:
    plan = plan_window(
        T0 + 30_000, T0 + HOUR - 30_000, 7, now_ms=NOW, retention=RetentionPolicy(), tier="1m"
    )
    assert (plan.since_ms, plan.until_ms) == (T0, T0 + HOUR)
    assert plan.step_ms == 9 * MIN  # 60 minutes in 7 buckets, rounded up to whole minutes
    assert plan.buckets == 7


async def test_an_unknown_tier_is_an_error_that_lists_the_tiers(store: Path) -> None:
    async with reading(store) as conn:
        with pytest.raises(InvalidQueryError, match=r"unknown tier '5m'; use one of raw, 1m, 1h"):
            await metric_series(
                conn, "temperature", since_ms=T0, until_ms=NOW, buckets=10, now_ms=NOW, tier="5m"
            )


async def test_an_unknown_metric_is_an_error_that_lists_the_metrics(store: Path) -> None:
    async with reading(store) as conn:
        with pytest.raises(InvalidQueryError, match=r"unknown metric 'temp'") as info:
            await metric_series(conn, "temp", since_ms=T0, until_ms=NOW, buckets=10, now_ms=NOW)
    for name in ("temperature", "power", "throttle_thermal", "ecc_uncorrected_volatile"):
        assert name in str(info.value)


# -- window validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("since", "until", "buckets", "message"),
    [
        (T0, T0, 10, "the window is empty"),
        (T0 + 1, T0, 10, "the window is empty"),
        (T0 - 801 * DAY, T0, 10, "at most 800 days"),
        (T0 - HOUR, T0, 0, f"buckets must be between 1 and {MAX_BUCKETS}, got 0"),
        (T0 - HOUR, T0, -5, "got -5"),
        (T0 - HOUR, T0, MAX_BUCKETS + 1, f"got {MAX_BUCKETS + 1}"),
    ],
    ids=["empty", "reversed", "too-long", "no-buckets", "negative", "too-many-buckets"],
)
async def test_a_bad_window_is_a_clear_error(
    store: Path, since: int, until: int, buckets: int, message: str
) -> None:
    async with reading(store) as conn:
        with pytest.raises(InvalidQueryError, match=message):
            await metric_series(
                conn, "temperature", since_ms=since, until_ms=until, buckets=buckets, now_ms=NOW
            )


async def test_the_longest_window_and_most_buckets_are_allowed(store: Path) -> None:
    async with reading(store) as conn:
        (series,) = await metric_series(
            conn,
            "temperature",
            since_ms=NOW - 800 * DAY,
            until_ms=NOW,
            buckets=MAX_BUCKETS,
            now_ms=NOW,
            gpus=[0],
        )
    assert series.tier == "1h"
    assert sum(b.count for b in series.buckets) == 4


# -- values and empty buckets ---------------------------------------------------------------


@pytest.mark.parametrize("tier", ["raw", "1m", "1h"])
async def test_a_bucket_holds_min_avg_max_and_count_in_the_metric_unit(
    store: Path, tier: str
) -> None:
    async def one(metric: str) -> Bucket:
        (series,) = await metric_series(
            conn,
            metric,
            since_ms=T0,
            until_ms=T0 + MIN,
            buckets=1,
            now_ms=NOW,
            gpus=[0],
            tier=tier,
        )
        (bucket,) = series.buckets
        return bucket

    async with reading(store) as conn:
        temperature = await one("temperature")
        power = await one("power")
        power_throttle = await one("throttle_power")
        thermal_throttle = await one("throttle_thermal")
        no_data = await one("nvlink_errors")
    assert temperature == Bucket(T0, 50, 60, 70, 4)
    assert power == Bucket(T0, 250.5, 251.0, 251.5, 2)  # stored in mW, answered in W
    assert power_throttle == Bucket(T0, 0, 0.5, 1, 4)  # avg = share of the time throttled
    assert thermal_throttle == Bucket(T0, 0, 0.25, 1, 4)
    assert no_data == Bucket(T0, None, None, None, 0)


async def test_empty_buckets_are_kept_with_no_values(store: Path) -> None:
    async with reading(store) as conn:
        (series,) = await metric_series(
            conn,
            "temperature",
            since_ms=T0 - 2 * MIN,
            until_ms=T0 + 3 * MIN,
            buckets=5,
            now_ms=NOW,
            gpus=[0],
        )
    assert series.tier == "1m"
    empty = [Bucket(T0 + k * MIN, None, None, None, 0) for k in (-2, -1, 1, 2)]
    assert series.buckets == (*empty[:2], Bucket(T0, 50, 60, 70, 4), *empty[2:])


# -- GPU selectors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        (1, GPU1),
        ("1", GPU1),
        (" 2 ", GPU2),
        ("GPU-9f8e7d6c", GPU1),
        ("gpu-9F8E7D6C-2222", GPU1),
        ("GPU-0a1b2c3d-1", GPU0),
        ("86:00", GPU1),
        ("86:00.0", GPU1),
        ("0000:86:00.0", GPU1),
        ("00000000:86:00.0", GPU1),
        ("00000000:db:00.0", GPU2),
    ],
    ids=repr,
)
async def test_a_gpu_can_be_named_by_index_uuid_prefix_or_pci_id(
    store: Path, selector: str | int, expected: GpuInfo
) -> None:
    async with reading(store) as conn:
        (series,) = await metric_series(
            conn,
            "temperature",
            since_ms=T0,
            until_ms=T0 + MIN,
            buckets=1,
            now_ms=NOW,
            gpus=[selector],
        )
    assert (series.uuid, series.index, series.pci_bus_id) == (
        expected.uuid,
        expected.index,
        expected.pci_bus_id,
    )


async def test_all_gpus_by_default_and_each_selected_gpu_once_in_index_order(store: Path) -> None:
    async with reading(store) as conn:
        everything = await metric_series(
            conn, "temperature", since_ms=T0, until_ms=T0 + MIN, buckets=1, now_ms=NOW
        )
        chosen = await metric_series(
            conn,
            "temperature",
            since_ms=T0,
            until_ms=T0 + MIN,
            buckets=1,
            now_ms=NOW,
            gpus=[2, "3b:00", 0, GPU2.uuid],
        )
    assert [s.index for s in everything] == [0, 1, 2]
    assert [s.buckets[0].avg for s in everything] == [60, 50, 40]
    assert [s.index for s in chosen] == [0, 2]


@pytest.mark.parametrize(
    ("selector", "why"),
    [
        (7, "matches no GPU"),
        ("GPU-0a1", "matches no GPU"),  # too short a prefix to trust
        ("GPU-0a1b2c3d", "matches several GPUs"),
        ("3c:00.0", "matches no GPU"),
        ("the big one", "matches no GPU"),
    ],
    ids=repr,
)
async def test_a_selector_that_names_no_single_gpu_lists_the_known_gpus(
    store: Path, selector: str | int, why: str
) -> None:
    async with reading(store) as conn:
        with pytest.raises(InvalidQueryError) as info:
            await metric_series(
                conn,
                "temperature",
                since_ms=T0,
                until_ms=NOW,
                buckets=1,
                now_ms=NOW,
                gpus=[0, selector],
            )
    message = str(info.value)
    assert f"GPU {selector!r} {why}" in message
    assert "0 (00000000:3B:00.0), 1 (00000000:86:00.0), 2 (00000000:DB:00.0)" in message


async def test_a_selector_on_an_empty_store_says_nothing_was_sampled(db_path: Path) -> None:
    prepare_store(db_path)
    async with reading(db_path) as conn:
        with pytest.raises(InvalidQueryError, match=r"none \(nothing sampled"):
            await latest_samples(conn, [0])


# -- query plans -----------------------------------------------------------------------------

HOT_TABLE = re.compile(r"\bFROM (samples|rollup_1m|rollup_1h)\b")


@pytest.mark.parametrize("analyzed", [False, True], ids=["fresh", "analyzed"])
async def test_sample_and_rollup_queries_search_the_primary_key(
    store: Path, analyzed: bool
) -> None:
    if analyzed:
        with closing(sqlite3.connect(store)) as conn:
            conn.execute("ANALYZE")
    statements: list[str] = []
    async with reading(store) as conn:
        await conn.set_trace_callback(statements.append)
        for tier in ("raw", "1m", "1h"):
            await metric_series(
                conn, "power", since_ms=T0 - DAY, until_ms=NOW, buckets=24, now_ms=NOW, tier=tier
            )
        await latest_samples(conn)
    hot = {sql: m[1] for sql in statements if (m := HOT_TABLE.search(sql))}
    assert set(hot.values()) == {"samples", "rollup_1m", "rollup_1h"}
    with closing(sqlite3.connect(store)) as conn:
        for sql in hot:
            plan = " | ".join(str(row[-1]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
            assert "USING PRIMARY KEY (gpu=?" in plan, (sql, plan)
            assert "SCAN" not in plan, (sql, plan)
            if "ORDER BY ts DESC LIMIT 1" in sql:  # the newest sample: one probe, no sort
                assert "TEMP B-TREE" not in plan, (sql, plan)


# -- bucket width against the sampling interval, the latest reading, the crossing ----------

HOT = GpuInfo(
    uuid="GPU-5ab5e41a-4444-4000-8000-000000000000",
    index=0,
    name="NVIDIA H100 80GB HBM3",
    pci_bus_id="00000000:18:00.0",
    slowdown_temp_c=92,
    shutdown_temp_c=97,
)


def every_second(temps: list[int], *, t0: int = T0) -> list[SampleBatch]:
    """One sample a second (with a few ms of jitter) of GPU ``HOT`` at ``temps``."""
    ticks = [SampleBatch(t0, gpus=(HOT,))]
    for k, temp in enumerate(temps):
        ts = t0 + k * 1000 + (k * 7) % 5
        ticks.append(SampleBatch(ts, (GpuSample(HOT.uuid, ts, temperature_c=temp),)))
    return ticks


async def test_buckets_are_never_narrower_than_the_sampling_interval(db_path: Path) -> None:
    await write_all(db_path, every_second([60] * 120))
    async with reading(db_path) as conn:
        interval = await sample_interval_ms(conn, [1], since_ms=T0, until_ms=T0 + 2 * MIN)
        assert interval is not None and abs(interval - 1000) <= 4  # the ticks jitter by 4 ms
        (asked,) = await metric_series(
            conn, "temperature", since_ms=T0, until_ms=T0 + 2 * MIN, buckets=1000, now_ms=NOW
        )
        (capped,) = await metric_series(
            conn,
            "temperature",
            since_ms=T0,
            until_ms=T0 + 2 * MIN,
            buckets=1000,
            now_ms=NOW,
            no_finer_than_samples=True,
        )
    assert (len(asked.buckets), asked.step_ms) == (1000, 120)  # mostly empty 120 ms buckets
    assert capped.step_ms >= 999 and len(capped.buckets) <= 121
    assert sum(b.count for b in capped.buckets) == 120
    assert sum(1 for b in capped.buckets if b.count == 0) <= 2


async def test_the_interval_cap_leaves_coarser_asks_alone(db_path: Path) -> None:
    await write_all(db_path, every_second([60] * 120))
    async with reading(db_path) as conn:
        (series,) = await metric_series(
            conn,
            "temperature",
            since_ms=T0,
            until_ms=T0 + 2 * MIN,
            buckets=12,
            now_ms=NOW,
            no_finer_than_samples=True,
        )
        (nothing,) = await metric_series(
            conn,
            "temperature",
            since_ms=T0 - HOUR,
            until_ms=T0,
            buckets=500,
            now_ms=NOW,
            no_finer_than_samples=True,
        )
    assert (len(series.buckets), series.step_ms) == (12, 10_000)
    assert len(nothing.buckets) == 500  # no samples, no interval to cap at


async def test_the_latest_reading_is_the_newest_raw_sample_not_a_bucket_average(
    db_path: Path,
) -> None:
    temps = [60] * 50 + [72, 80, 88, 93, 96, 96]  # heats in the last seconds
    await write_all(db_path, every_second(temps))
    async with reading(db_path) as conn:
        (series,) = await metric_series(
            conn, "temperature", since_ms=T0, until_ms=T0 + MIN, buckets=1, now_ms=NOW
        )
        latest = await latest_reading(conn, "temperature", series)
    assert series.buckets[0].avg == pytest.approx(sum(temps) / len(temps))  # about 63
    assert latest is not None and latest.value == 96 and latest.source == "sample"
    assert T0 + 55_000 <= latest.ts_ms < T0 + 56_000


async def test_a_crossing_is_dated_to_the_first_sample_past_the_threshold(db_path: Path) -> None:
    temps = [80] * 30 + [91, 92, 94, 95, 96, 96]  # the sample at second 31 reaches 92
    await write_all(db_path, every_second(temps))
    threshold = Threshold(92.0, "slowdown_temp of GPU 0", beyond=("shutdown temperature", 97.0))
    async with reading(db_path) as conn:
        (series,) = await metric_series(
            conn, "temperature", since_ms=T0, until_ms=T0 + MIN, buckets=6, now_ms=NOW
        )
        report = await series_report(conn, "temperature", series, threshold)
    assert report.crossed and report.current is not None and report.current.value == 96
    assert report.crossed_at_ms is not None
    assert T0 + 31_000 <= report.crossed_at_ms < T0 + 31_010
    assert "shutdown temperature is 97 °C, 1 °C away" in report.reason


async def test_the_new_raw_reads_probe_the_primary_key(db_path: Path) -> None:
    await write_all(db_path, every_second([80] * 30 + [95] * 5))
    statements: list[str] = []
    async with reading(db_path) as conn:
        await conn.set_trace_callback(statements.append)
        (series,) = await metric_series(
            conn,
            "temperature",
            since_ms=T0,
            until_ms=T0 + MIN,
            buckets=600,
            now_ms=NOW,
            no_finer_than_samples=True,
        )
        await series_report(conn, "temperature", series, Threshold(92.0, "given"))
    probes = [sql for sql in statements if "FROM samples" in sql and "GROUP BY" not in sql]
    assert len(probes) == 3  # interval, latest reading, first sample past the threshold
    with closing(sqlite3.connect(db_path)) as conn:
        for sql in probes:
            plan = " | ".join(str(row[-1]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
            assert "USING PRIMARY KEY (gpu=? AND ts>? AND ts<?)" in plan, (sql, plan)
            assert "TEMP B-TREE" not in plan, (sql, plan)


async def test_past_raw_retention_the_last_buckets_max_stands_in_for_the_reading(
    db_path: Path,
) -> None:
    await write_all(db_path, every_second([80] * 30 + [95] * 5))
    with closing(sqlite3.connect(db_path)) as writable, writable:
        writable.execute("DELETE FROM samples")  # as retention would, leaving the rollups
    async with reading(db_path) as conn:
        (series,) = await metric_series(
            conn,
            "temperature",
            since_ms=T0,
            until_ms=T0 + 5 * MIN,
            buckets=5,
            now_ms=NOW,
            no_finer_than_samples=True,
        )
        assert await latest_reading(conn, "temperature", series) is None
        report = await series_report(conn, "temperature", series, Threshold(92.0, "given"))
    assert series.tier == "1m"
    assert report.current is not None
    assert (report.current.value, report.current.source) == (95, "bucket max")
    assert report.crossed and report.crossed_at_ms == T0  # to the bucket, without samples

"""A metric over a time window in N buckets, read from the coarsest tier that is fine enough.

Tiers: ``raw`` (every sample), ``1m`` and ``1h`` rollups. For a window split into N
buckets the query picks the coarsest tier whose step fits in one bucket and whose
retention still covers the window's start; if none covers it, the finest tier that does
(the answer is then coarser than asked, and says so through ``step_ms``). The window is
aligned to the tier's step and each bucket is a whole number of steps, so a bucket from a
rollup tier holds exactly the samples it would hold from raw data.

Asked to (``no_finer_than_samples``), a bucket is never narrower than the GPUs' sampling
interval: a 2-minute window of 1 s samples gives at most 120 buckets, not 1000 mostly empty
ones. Beside the buckets, two one-probe reads of the raw samples: the latest reading of a
series, and when a reading first reached a threshold.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import aiosqlite

from store.errors import InvalidQueryError
from store.inventory import resolve_gpus
from store.records import Bucket, InventoryGpu, Series
from store.retention import RetentionPolicy
from store.telemetry import Metric, get_metric
from store.trend import Reading, Threshold, TrendReport, assess_trend, crossing_bucket

__all__ = [
    "MAX_BUCKETS",
    "MAX_WINDOW_MS",
    "TIERS",
    "Tier",
    "choose_tier",
    "first_reaching",
    "get_tier",
    "latest_reading",
    "metric_series",
    "plan_window",
    "sample_interval_ms",
    "series_report",
]

MAX_BUCKETS = 2000
MAX_WINDOW_MS = 800 * 86_400_000
# Gaps between this many of the newest raw samples in a window give its sampling interval.
_INTERVAL_SAMPLES = 33


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    table: str
    step_ms: int


TIERS: tuple[Tier, ...] = (
    Tier("raw", "samples", 1),
    Tier("1m", "rollup_1m", 60_000),
    Tier("1h", "rollup_1h", 3_600_000),
)


@dataclass(frozen=True, slots=True)
class _Plan:
    tier: Tier
    since_ms: int
    until_ms: int
    step_ms: int
    buckets: int


def choose_tier(
    since_ms: int, until_ms: int, buckets: int, *, now_ms: int, retention: RetentionPolicy
) -> Tier:
    """The tier a window of ``buckets`` buckets is read from (see the module docstring)."""
    width = -(-(until_ms - since_ms) // buckets)
    covering = [t for t in TIERS if now_ms - retention.tier_ms(t.name) <= since_ms]
    fine_enough = [t for t in covering if t.step_ms <= width]
    if fine_enough:
        return fine_enough[-1]
    return covering[0] if covering else TIERS[-1]


def get_tier(name: str) -> Tier:
    """The tier called ``name``; an error listing the valid names otherwise."""
    for tier in TIERS:
        if tier.name == name:
            return tier
    raise InvalidQueryError(f"unknown tier {name!r}; use one of {', '.join(t.name for t in TIERS)}")


def plan_window(
    since_ms: int,
    until_ms: int,
    buckets: int,
    *,
    now_ms: int,
    retention: RetentionPolicy,
    tier: str | None = None,
) -> _Plan:
    """Validate the window and align it to the chosen tier's step."""
    if until_ms <= since_ms:
        raise InvalidQueryError("the window is empty: 'since' must be before 'until'")
    if until_ms - since_ms > MAX_WINDOW_MS:
        raise InvalidQueryError(
            f"the window is {(until_ms - since_ms) / 86_400_000:.0f} days; at most "
            f"{MAX_WINDOW_MS // 86_400_000} days can be asked at once"
        )
    if not 1 <= buckets <= MAX_BUCKETS:
        raise InvalidQueryError(f"buckets must be between 1 and {MAX_BUCKETS}, got {buckets}")
    chosen = (
        get_tier(tier)
        if tier is not None
        else choose_tier(since_ms, until_ms, buckets, now_ms=now_ms, retention=retention)
    )
    unit = chosen.step_ms
    start = since_ms - since_ms % unit
    end = -(-until_ms // unit) * unit
    step = -(-(end - start) // (buckets * unit)) * unit
    return _Plan(chosen, start, end, step, -(-(end - start) // step))


async def metric_series(
    conn: aiosqlite.Connection,
    metric: str | Metric,
    *,
    since_ms: int,
    until_ms: int,
    buckets: int,
    now_ms: int,
    gpus: Sequence[str | int] = (),
    retention: RetentionPolicy | None = None,
    tier: str | None = None,
    no_finer_than_samples: bool = False,
    resolved: Sequence[tuple[int, InventoryGpu]] | None = None,
) -> list[Series]:
    """``metric`` for each selected GPU (all by default), bucketed; empty buckets kept.

    ``resolved`` (row id, GPU) pairs from :func:`resolve_gpus` skip resolving ``gpus`` again,
    for callers that read many metrics of one GPU.
    ``tier`` forces a tier (``raw``, ``1m``, ``1h``) instead of choosing one.
    ``no_finer_than_samples`` caps the bucket count at the window over the sampling interval
    (:func:`sample_interval_ms`), so no bucket is narrower than the time between samples.
    """
    m = get_metric(metric) if isinstance(metric, str) else metric
    selected = list(resolved) if resolved is not None else await resolve_gpus(conn, gpus)
    if no_finer_than_samples and 1 <= buckets <= MAX_BUCKETS and until_ms > since_ms:
        interval = await sample_interval_ms(
            conn, [gpu_id for gpu_id, _ in selected], since_ms=since_ms, until_ms=until_ms
        )
        if interval is not None:
            buckets = max(1, min(buckets, (until_ms - since_ms) // interval))
    plan = plan_window(
        since_ms,
        until_ms,
        buckets,
        now_ms=now_ms,
        retention=retention or RetentionPolicy(),
        tier=tier,
    )
    out = []
    for gpu_id, gpu in selected:
        rows = await _bucket_rows(conn, m, plan, gpu_id)
        out.append(
            Series(
                uuid=gpu.info.uuid,
                index=gpu.info.index,
                pci_bus_id=gpu.info.pci_bus_id,
                metric=m.name,
                unit=m.unit,
                tier=plan.tier.name,
                step_ms=plan.step_ms,
                since_ms=plan.since_ms,
                until_ms=plan.until_ms,
                buckets=_buckets(m, plan, rows),
            )
        )
    return out


async def sample_interval_ms(
    conn: aiosqlite.Connection, gpu_ids: Sequence[int], *, since_ms: int, until_ms: int
) -> int | None:
    """The sampling interval in the window: the median gap between its newest raw samples.

    Gaps among the newest few samples of each GPU are pooled; the median, so a skipped
    tick or a restart does not widen it. None when no GPU has two samples in the window.
    """
    sql = (
        "SELECT ts FROM samples WHERE gpu = ? AND ts >= ? AND ts < ? "
        f"ORDER BY ts DESC LIMIT {_INTERVAL_SAMPLES}"
    )
    gaps: list[int] = []
    for gpu_id in gpu_ids:
        async with conn.execute(sql, (gpu_id, since_ms, until_ms)) as cur:
            ts = [int(t) async for (t,) in cur]
        gaps.extend(a - b for a, b in pairwise(ts) if a > b)
    return int(statistics.median_low(gaps)) if gaps else None


async def series_report(
    conn: aiosqlite.Connection,
    metric: str | Metric,
    series: Series,
    threshold: Threshold | None = None,
) -> TrendReport:
    """:func:`store.trend.assess_trend` on ``series`` with what only the raw samples know.

    The current value is the newest raw reading; past the threshold, the crossing time is
    the first sample at or past it in the bucket where the latest run of such buckets began.
    """
    m = get_metric(metric) if isinstance(metric, str) else metric
    current = await latest_reading(conn, m, series)
    crossed_at = None
    if threshold is not None and current is not None and threshold.reached(current.value):
        bucket = crossing_bucket(series, threshold)
        if bucket is not None:
            crossed_at = await first_reaching(
                conn,
                m,
                series,
                threshold.value,
                since_ms=max(bucket.ts_ms, series.since_ms),
                until_ms=min(bucket.ts_ms + series.step_ms, series.until_ms),
                above=threshold.above,
            )
    return assess_trend(series, current=current, threshold=threshold, crossed_at_ms=crossed_at)


async def latest_reading(
    conn: aiosqlite.Connection, metric: str | Metric, series: Series
) -> Reading | None:
    """The newest raw sample of ``series``' metric in its window.

    Read from the last bucket that holds data (a primary-key probe, newest first); None
    when its raw samples are past retention or the series has no data.
    """
    m = get_metric(metric) if isinstance(metric, str) else metric
    last = next((b for b in reversed(series.buckets) if b.count > 0), None)
    gpu_id = await _gpu_id(conn, series.uuid)
    if last is None or gpu_id is None:
        return None
    value = m.raw_sql()
    sql = (
        f"SELECT ts, {value} FROM samples WHERE gpu = ? AND ts >= ? AND ts < ? "
        f"AND {m.raw_column} IS NOT NULL ORDER BY ts DESC LIMIT 1"
    )
    start, end = max(last.ts_ms, series.since_ms), min(last.ts_ms + series.step_ms, series.until_ms)
    async with conn.execute(sql, (gpu_id, start, end)) as cur:
        row = await cur.fetchone()
    return None if row is None else Reading(int(row[0]), row[1] * m.scale)


async def first_reaching(
    conn: aiosqlite.Connection,
    metric: str | Metric,
    series: Series,
    threshold: float,
    *,
    since_ms: int,
    until_ms: int,
    above: bool = True,
) -> int | None:
    """The time of the first raw sample in ``[since_ms, until_ms)`` at or past ``threshold``.

    Meant for one bucket (the one a crossing was found in), so the answer is to the sample
    rather than to the bucket; None when raw samples no longer cover it.
    """
    m = get_metric(metric) if isinstance(metric, str) else metric
    gpu_id = await _gpu_id(conn, series.uuid)
    if gpu_id is None:
        return None
    compare = ">=" if above else "<="
    sql = (
        f"SELECT min(ts) FROM samples WHERE gpu = ? AND ts >= ? AND ts < ? "
        f"AND {m.raw_sql()} * ? {compare} ?"
    )
    async with conn.execute(sql, (gpu_id, since_ms, until_ms, m.scale, threshold)) as cur:
        row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def _gpu_id(conn: aiosqlite.Connection, uuid: str) -> int | None:
    async with conn.execute("SELECT id FROM gpus WHERE uuid = ?", (uuid,)) as cur:
        row = await cur.fetchone()
    return None if row is None else int(row[0])


async def _bucket_rows(
    conn: aiosqlite.Connection, m: Metric, plan: _Plan, gpu_id: int
) -> dict[int, tuple[int | None, int | None, int, int]]:
    if plan.tier.name == "raw":
        v = m.raw_sql()
        aggs = f"min({v}), max({v}), coalesce(sum({v}), 0), count({v})"
    else:
        c = m.column
        aggs = f"min({c}_min), max({c}_max), coalesce(sum({c}_sum), 0), coalesce(sum({c}_n), 0)"
    sql = (
        f"SELECT (ts - ?) / ? AS b, {aggs} FROM {plan.tier.table} "
        "WHERE gpu = ? AND ts >= ? AND ts < ? GROUP BY b"
    )
    args = (plan.since_ms, plan.step_ms, gpu_id, plan.since_ms, plan.until_ms)
    async with conn.execute(sql, args) as cur:
        return {int(b): (lo, hi, int(total), int(n)) async for b, lo, hi, total, n in cur}


def _buckets(
    m: Metric, plan: _Plan, rows: dict[int, tuple[int | None, int | None, int, int]]
) -> tuple[Bucket, ...]:
    out = []
    for i in range(plan.buckets):
        ts = plan.since_ms + i * plan.step_ms
        lo, hi, total, n = rows.get(i, (None, None, 0, 0))
        if n == 0 or lo is None or hi is None:
            out.append(Bucket(ts, None, None, None, 0))
        else:
            out.append(Bucket(ts, lo * m.scale, total / n * m.scale, hi * m.scale, n))
    return tuple(out)

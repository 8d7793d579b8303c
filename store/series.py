"""A metric over a time window in N buckets, read from the coarsest tier that is fine enough.

Tiers: ``raw`` (every sample), ``1m`` and ``1h`` rollups. For a window split into N
buckets the query picks the coarsest tier whose step fits in one bucket and whose
retention still covers the window's start; if none covers it, the finest tier that does
(the answer is then coarser than asked, and says so through ``step_ms``). The window is
aligned to the tier's step and each bucket is a whole number of steps, so a bucket from a
rollup tier holds exactly the samples it would hold from raw data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aiosqlite

from store.errors import InvalidQueryError
from store.inventory import resolve_gpus
from store.metrics import Metric, get_metric
from store.records import Bucket, Series
from store.retention import RetentionPolicy

__all__ = [
    "MAX_BUCKETS",
    "MAX_WINDOW_MS",
    "TIERS",
    "Tier",
    "choose_tier",
    "get_tier",
    "metric_series",
    "plan_window",
]

MAX_BUCKETS = 2000
MAX_WINDOW_MS = 800 * 86_400_000


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
) -> list[Series]:
    """``metric`` for each selected GPU (all by default), bucketed; empty buckets kept.

    ``tier`` forces a tier (``raw``, ``1m``, ``1h``) instead of choosing one.
    """
    m = get_metric(metric) if isinstance(metric, str) else metric
    plan = plan_window(
        since_ms,
        until_ms,
        buckets,
        now_ms=now_ms,
        retention=retention or RetentionPolicy(),
        tier=tier,
    )
    out = []
    for gpu_id, gpu in await resolve_gpus(conn, gpus):
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

"""Rollups: per-bucket aggregates of the raw samples at each tier (1 minute, 1 hour).

Maintained incrementally: each batch's partial aggregates per (tier, GPU, bucket) are added
to the stored rows (min of mins, max of maxes, sums of sums and counts), never by
rescanning raw rows, so a 90-day query reads rollups only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import aiosqlite

from store.schema import ROLLUP_TIERS
from store.telemetry import METRICS

__all__ = ["ROLLUP_UPSERTS", "RollupAccumulator"]


def _rollup_upsert(table: str) -> str:
    cols = ["throttle_reasons_any"]
    sets = [
        "throttle_reasons_any = coalesce(throttle_reasons_any | excluded.throttle_reasons_any, "
        "throttle_reasons_any, excluded.throttle_reasons_any)"
    ]
    for m in METRICS:
        c = m.column
        cols += [f"{c}_min", f"{c}_max", f"{c}_sum", f"{c}_n"]
        sets += [
            f"{c}_min = min(coalesce({c}_min, excluded.{c}_min), "
            f"coalesce(excluded.{c}_min, {c}_min))",
            f"{c}_max = max(coalesce({c}_max, excluded.{c}_max), "
            f"coalesce(excluded.{c}_max, {c}_max))",
            f"{c}_sum = {c}_sum + excluded.{c}_sum",
            f"{c}_n = {c}_n + excluded.{c}_n",
        ]
    return (
        f"INSERT INTO {table} (gpu, ts, {', '.join(cols)}) "
        f"VALUES ({', '.join('?' * (len(cols) + 2))}) "
        f"ON CONFLICT (gpu, ts) DO UPDATE SET {', '.join(sets)}"
    )


# Per metric, in METRICS order: the raw column it reads and its flag mask (hot loop).
_SOURCES = tuple((m.raw_column, m.mask) for m in METRICS)
ROLLUP_UPSERTS = {table: _rollup_upsert(table) for table, _ in ROLLUP_TIERS}


@dataclass(slots=True)
class _Agg:
    """Partial aggregates of one (tier, GPU, bucket): per metric [min, max, sum, n]."""

    reasons_any: int | None = None
    values: list[list[int | None]] = field(
        default_factory=lambda: [[None, None, 0, 0] for _ in METRICS]
    )

    def add(self, row: dict[str, int | None]) -> None:
        reasons = row.get("throttle_reasons")
        if reasons is not None:
            self.reasons_any = reasons | (self.reasons_any or 0)
        for (column, mask), agg in zip(_SOURCES, self.values, strict=True):
            v = row[column]
            if v is None:
                continue
            if mask is not None:
                v = int(v & mask != 0)
            lo, hi, total, n = agg
            agg[0] = v if lo is None or v < lo else lo
            agg[1] = v if hi is None or v > hi else hi
            agg[2] = (total or 0) + v
            agg[3] = (n or 0) + 1

    def params(self, gpu: int, ts: int) -> list[int | None]:
        out: list[int | None] = [gpu, ts, self.reasons_any]
        for agg in self.values:
            out.extend(agg)
        return out


class RollupAccumulator:
    """Per-batch partial aggregates for every tier; also the reference for the property test."""

    def __init__(self) -> None:
        self.buckets: dict[tuple[str, int, int], _Agg] = {}

    def add(self, gpu: int, ts_ms: int, row: dict[str, int | None]) -> None:
        for table, step in ROLLUP_TIERS:
            key = (table, gpu, ts_ms - ts_ms % step)
            agg = self.buckets.get(key)
            if agg is None:
                agg = self.buckets[key] = _Agg()
            agg.add(row)

    def params_by_table(self) -> dict[str, list[list[int | None]]]:
        out: dict[str, list[list[int | None]]] = {table: [] for table, _ in ROLLUP_TIERS}
        for (table, gpu, ts), agg in self.buckets.items():
            out[table].append(agg.params(gpu, ts))
        return out

    async def upsert(self, conn: aiosqlite.Connection) -> None:
        """Add the partial aggregates to the stored rollup rows, inside the caller's transaction."""
        for table, params in self.params_by_table().items():
            if params:
                await conn.executemany(ROLLUP_UPSERTS[table], params)

"""What time the store covers, so "nothing found" can be told from "not recording".

Cheap by construction: the inventory's first/last seen, the XID index's ends, the kmsg
watermark, and the gaps in one rollup tier (1-minute rows for windows up to a week, hourly
rows beyond), never a scan of raw samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import aiosqlite

__all__ = ["Coverage", "store_coverage"]

GAP_STEPS = 3  # missing rollup rows in a row that make a gap (3 min, or 3 h)
MAX_GAPS = 5
_WEEK_MS = 7 * 24 * 3_600_000


@dataclass(frozen=True, slots=True)
class Coverage:
    """When the store started recording, its newest sample and kernel record, and gaps.

    ``gaps`` are the longest stretches inside the asked window with no samples (start,
    end), at most five, longest first; a window before ``recording_since_ms`` is not a gap.
    """

    recording_since_ms: int | None
    last_sample_ms: int | None
    last_kernel_record_ms: int | None
    first_xid_ms: int | None
    last_xid_ms: int | None
    gaps: tuple[tuple[int, int], ...] = ()


async def store_coverage(
    conn: aiosqlite.Connection, *, since_ms: int | None = None, until_ms: int | None = None
) -> Coverage:
    """The store's coverage, with the sampling gaps inside ``[since_ms, until_ms)`` if given."""
    first_seen, last_seen = await _one(
        conn, "SELECT min(first_seen_ms), max(last_seen_ms) FROM gpus"
    )
    first_xid, last_xid = await _one(conn, "SELECT min(ts_ms), max(ts_ms) FROM xid_events")
    (kernel,) = await _one(
        conn, "SELECT max(updated_ms) FROM watermarks WHERE source_key LIKE 'kmsg:%'"
    )
    starts = [t for t in (first_seen, first_xid) if t is not None]
    since = min(starts) if starts else None
    gaps: tuple[tuple[int, int], ...] = ()
    if since_ms is not None and until_ms is not None and first_seen is not None:
        lo, hi = max(since_ms, first_seen), min(until_ms, last_seen or until_ms)
        gaps = await _gaps(conn, lo, hi) if hi > lo else ()
    return Coverage(since, last_seen, kernel, first_xid, last_xid, gaps)


async def _gaps(
    conn: aiosqlite.Connection, since_ms: int, until_ms: int
) -> tuple[tuple[int, int], ...]:
    table, step = (
        ("rollup_1m", 60_000) if until_ms - since_ms <= _WEEK_MS else ("rollup_1h", 3_600_000)
    )
    sql = f"SELECT DISTINCT ts FROM {table} WHERE ts >= ? AND ts < ? ORDER BY ts"
    async with conn.execute(sql, (since_ms - since_ms % step, until_ms)) as cur:
        stamps = [int(t) async for (t,) in cur]
    edges = [since_ms - since_ms % step - step, *stamps, until_ms - until_ms % step + step]
    found = [
        (max(a + step, since_ms), min(b, until_ms))
        for a, b in pairwise(edges)
        if b - a > GAP_STEPS * step
    ]
    found = [g for g in found if g[1] > g[0]]
    found.sort(key=lambda g: g[0] - g[1])
    return tuple(found[:MAX_GAPS])


async def _one(conn: aiosqlite.Connection, sql: str) -> tuple[int | None, ...]:
    async with conn.execute(sql) as cur:
        row = await cur.fetchone()
    return tuple(None if v is None else int(v) for v in (row or ()))

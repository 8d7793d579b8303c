"""Retention: drop what is older than each tier keeps, then hand the pages back to the disk.

Runs on the writer's connection between commits (:meth:`StoreWriter.exclusive`), one
short transaction per table and GPU so the writer is never held up for long. Deletes go
by primary-key range per GPU (``gpu = ? AND ts < ?``), never a full scan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import aiosqlite
import structlog

__all__ = ["RetentionPolicy", "RetentionResult", "apply_retention"]

log = structlog.get_logger("store.retention")

_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long each tier keeps its rows; defaults are the design's (48 h, 30 d, 400 d)."""

    raw_ms: int = 48 * _HOUR_MS
    minute_ms: int = 30 * _DAY_MS
    hour_ms: int = 400 * _DAY_MS
    events_ms: int = 400 * _DAY_MS

    def tier_ms(self, tier: str) -> int:
        """Retention of a tier by its query name (``raw``, ``1m``, ``1h``)."""
        return {"raw": self.raw_ms, "1m": self.minute_ms, "1h": self.hour_ms}[tier]


@dataclass(slots=True)
class RetentionResult:
    """Rows deleted per table and pages returned to the file system."""

    deleted: dict[str, int] = field(default_factory=dict)
    pages_freed: int = 0

    @property
    def total_deleted(self) -> int:
        return sum(self.deleted.values())


async def apply_retention(
    conn: aiosqlite.Connection, policy: RetentionPolicy, *, now_ms: int
) -> RetentionResult:
    """Delete rows past their tier's retention, then run an incremental vacuum."""
    result = RetentionResult()
    async with conn.execute("SELECT id FROM gpus") as cur:
        gpus = [int(r[0]) async for r in cur]
    per_gpu = (
        ("samples", "ts", policy.raw_ms),
        ("rollup_1m", "ts", policy.minute_ms),
        ("rollup_1h", "ts", policy.hour_ms),
        ("gpu_processes", "last_ts", policy.minute_ms),
        ("gpu_pods", "last_ts", policy.minute_ms),
        ("gpu_events", "ts_ms", policy.events_ms),
    )
    for table, column, keep_ms in per_gpu:
        deleted = 0
        for gpu in gpus:
            deleted += await _delete(
                conn, f"DELETE FROM {table} WHERE gpu = ? AND {column} < ?", gpu, now_ms - keep_ms
            )
        result.deleted[table] = deleted
    result.deleted["xid_events"] = await _delete(
        conn,
        "DELETE FROM xid_events WHERE ts_ms < ? AND last_ts_ms < ?",
        *([now_ms - policy.events_ms] * 2),
    )
    result.pages_freed = await _incremental_vacuum(conn)
    if result.total_deleted:
        log.info(
            "retention_applied",
            deleted=result.deleted,
            pages_freed=result.pages_freed,
        )
    return result


async def _delete(conn: aiosqlite.Connection, sql: str, *args: int) -> int:
    await conn.execute("BEGIN IMMEDIATE")
    try:
        cur = await conn.execute(sql, args)
        n = cur.rowcount
        await conn.commit()
    except BaseException:
        await conn.rollback()
        raise
    return max(n, 0)


async def _incremental_vacuum(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA freelist_count") as cur:
        row = await cur.fetchone()
    free = int(row[0]) if row else 0
    if free:
        # One page per step, and the pragma declares no columns, so execute() steps it once
        # (one page); executescript() steps every statement to the end.
        await conn.executescript("PRAGMA incremental_vacuum")
    return free

"""Which compute processes were on a GPU at a moment, from the stored process spans.

The sampler sees processes only at its ticks, so a span ``[first_ts, last_ts]`` is where a
process was seen, not exactly when it lived. A process an XID killed was last seen a tick
or so before the XID; "at" a moment therefore means seen within a few sample intervals of
it, the interval read from the GPU's own samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import aiosqlite

from store.inventory import resolve_gpus

__all__ = ["DEFAULT_INTERVAL_MS", "MAX_PROCESSES", "ProcessSpan", "processes_at"]

DEFAULT_INTERVAL_MS = 10_000  # when the GPU has too few samples to tell its interval
INTERVALS_SLACK = 3
MAX_PROCESSES = 500


@dataclass(frozen=True, slots=True)
class ProcessSpan:
    """A process seen on a GPU from ``first_ts_ms`` to ``last_ts_ms`` (sampler ticks).

    ``used_mib`` is the frame buffer memory it held at its last tick, ``max_used_mib`` the
    most seen; None where NVML did not say.
    """

    uuid: str
    index: int
    pci_bus_id: str
    pid: int
    name: str | None
    first_ts_ms: int
    last_ts_ms: int
    used_mib: int | None
    max_used_mib: int | None


async def processes_at(
    conn: aiosqlite.Connection, selector: str | int, at_ms: int | None
) -> list[ProcessSpan]:
    """Processes on the GPU ``selector`` names at ``at_ms`` (None: now), by first seen.

    ``at_ms`` given: spans seen within three sample intervals before it that began no later
    than one interval after it. None: spans seen within three intervals of the GPU's newest
    sample (nothing if it was never sampled).
    """
    ((gpu_id, gpu),) = await resolve_gpus(conn, [selector])
    anchor = at_ms if at_ms is not None else await _newest_sample(conn, gpu_id)
    if anchor is None:
        return []
    interval = await _interval_ms(conn, gpu_id, anchor)
    sql = (
        "SELECT pid, name, first_ts, last_ts, used_mib, max_used_mib FROM gpu_processes "
        "WHERE gpu = ? AND last_ts >= ? AND first_ts <= ? ORDER BY first_ts, pid LIMIT ?"
    )
    args = (gpu_id, anchor - INTERVALS_SLACK * interval, anchor + interval, MAX_PROCESSES)
    info = gpu.info
    async with conn.execute(sql, args) as cur:
        return [
            ProcessSpan(info.uuid, info.index, info.pci_bus_id, pid, name, t0, t1, used, peak)
            async for pid, name, t0, t1, used, peak in cur
        ]


async def _newest_sample(conn: aiosqlite.Connection, gpu_id: int) -> int | None:
    async with conn.execute("SELECT max(ts) FROM samples WHERE gpu = ?", (gpu_id,)) as cur:
        row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def _interval_ms(conn: aiosqlite.Connection, gpu_id: int, at_ms: int) -> int:
    """The GPU's sampling interval near ``at_ms``: the smallest gap among its last few samples.

    The smallest, not the mean, so a tick skipped under load does not widen the slack.
    """
    sql = "SELECT ts FROM samples WHERE gpu = ? AND ts <= ? ORDER BY ts DESC LIMIT 5"
    async with conn.execute(sql, (gpu_id, at_ms)) as cur:
        ts = [int(t) async for (t,) in cur]
    gaps = [a - b for a, b in pairwise(ts) if a > b]
    return min(gaps) if gaps else DEFAULT_INTERVAL_MS

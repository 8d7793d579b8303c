"""Which compute processes were on a GPU at a moment, from the stored process spans.

The sampler sees processes only at its ticks, so a span ``[first_ts, last_ts]`` is where a
process was seen, not exactly when it lived. A process an XID killed was last seen a tick
or so before the XID; "at" a moment therefore means seen within a few sample intervals of
it, the interval read from the GPU's own samples. A GPU that was lost (fell off the bus)
runs nothing after it: its processes are reported ended at the moment it was lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import aiosqlite

from store.inventory import resolve_gpus
from store.records import InventoryGpu, PodRef

__all__ = [
    "DEFAULT_INTERVAL_MS",
    "MAX_PROCESSES",
    "PodSpan",
    "ProcessSpan",
    "pods_at",
    "processes_at",
]

DEFAULT_INTERVAL_MS = 10_000  # when the GPU has too few samples to tell its interval
INTERVALS_SLACK = 3
MAX_PROCESSES = 500


@dataclass(frozen=True, slots=True)
class ProcessSpan:
    """A process seen on a GPU from ``first_ts_ms`` to ``last_ts_ms`` (sampler ticks).

    ``used_mib`` is the frame buffer memory it held at its last tick, ``max_used_mib`` the
    most seen; None where NVML did not say. ``pod`` is its Kubernetes pod when known.
    ``running`` is false when its GPU had been lost by the moment asked about; the
    process ended then, at ``ended_ts_ms`` (the GPU's ``lost_since``).
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
    pod: PodRef | None = None
    running: bool = True
    ended_ts_ms: int | None = None


@dataclass(frozen=True, slots=True)
class PodSpan:
    """A pod seen holding a GPU from ``first_ts_ms`` to ``last_ts_ms`` (sampler ticks).

    ``source`` says how: ``annotation``, ``whole-node`` (it requested every GPU) or
    ``process`` (one of its processes ran on the GPU).
    """

    uuid: str
    index: int
    pci_bus_id: str
    pod: PodRef
    source: str
    first_ts_ms: int
    last_ts_ms: int


async def processes_at(
    conn: aiosqlite.Connection, selector: str | int, at_ms: int | None
) -> list[ProcessSpan]:
    """Processes on the GPU ``selector`` names at ``at_ms`` (None: now), by first seen.

    ``at_ms`` given: spans seen within three sample intervals before it that began no later
    than one interval after it. None: spans seen within three intervals of the GPU's newest
    sample (nothing if it was never sampled). On a GPU lost by then (now, for None) the
    spans come back with ``running`` false and ``ended_ts_ms`` its ``lost_since_ms``.
    """
    sql = (
        "SELECT pid, name, first_ts, last_ts, used_mib, max_used_mib, namespace, pod, container "
        "FROM gpu_processes WHERE gpu = ? AND last_ts >= ? AND first_ts <= ? "
        "ORDER BY first_ts, pid LIMIT ?"
    )
    gpu, rows = await _spans_at(conn, selector, at_ms, sql)
    info = gpu.info
    lost = gpu.lost_since_ms
    ended = lost if lost is not None and (at_ms is None or at_ms >= lost) else None
    where = (info.uuid, info.index, info.pci_bus_id)
    return [_span(where, row, running=ended is None, ended_ts_ms=ended) for row in rows]


async def pods_at(
    conn: aiosqlite.Connection, selector: str | int, at_ms: int | None
) -> list[PodSpan]:
    """Pods holding the GPU ``selector`` names at ``at_ms`` (None: now), by first seen.

    The same window as :func:`processes_at`: "which pod had GPU 3 at 02:14" has an answer
    from annotations or GPU requests even when no process was seen.
    """
    sql = (
        "SELECT namespace, pod, uid, source, first_ts, last_ts FROM gpu_pods "
        "WHERE gpu = ? AND last_ts >= ? AND first_ts <= ? ORDER BY first_ts, pod LIMIT ?"
    )
    gpu, rows = await _spans_at(conn, selector, at_ms, sql)
    info = gpu.info
    return [
        PodSpan(info.uuid, info.index, info.pci_bus_id, PodRef(ns, pod, uid=uid), source, t0, t1)
        for ns, pod, uid, source, t0, t1 in rows
    ]


async def _spans_at(
    conn: aiosqlite.Connection, selector: str | int, at_ms: int | None, sql: str
) -> tuple[InventoryGpu, list[tuple[Any, ...]]]:
    """The GPU ``selector`` names, and the rows ``sql`` selects for its window at ``at_ms``.

    ``sql`` takes (gpu id, lowest last_ts, highest first_ts, limit).
    """
    ((gpu_id, gpu),) = await resolve_gpus(conn, [selector])
    window = await _window(conn, gpu_id, at_ms)
    if window is None:
        return gpu, []
    async with conn.execute(sql, (gpu_id, *window, MAX_PROCESSES)) as cur:
        return gpu, [tuple(row) async for row in cur]


async def _window(
    conn: aiosqlite.Connection, gpu_id: int, at_ms: int | None
) -> tuple[int, int] | None:
    """Span bounds that count as "at ``at_ms``": ``last_ts >= lo`` and ``first_ts <= hi``.

    Seen within three sample intervals before the moment and begun no later than one
    interval after it; None (now) anchors on the GPU's newest sample, and a GPU never
    sampled has no window.
    """
    anchor = at_ms if at_ms is not None else await _newest_sample(conn, gpu_id)
    if anchor is None:
        return None
    interval = await _interval_ms(conn, gpu_id, anchor)
    return anchor - INTERVALS_SLACK * interval, anchor + interval


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


async def processes_between(
    conn: aiosqlite.Connection, since_ms: int, until_ms: int
) -> list[ProcessSpan]:
    """Every process seen on any GPU between ``since_ms`` and ``until_ms``, by first seen.

    What tells workloads apart: which ran where, and which ran clean on other GPUs.
    """
    sql = (
        "SELECT g.uuid, g.idx, g.pci_bus_id, p.pid, p.name, p.first_ts, p.last_ts, p.used_mib, "
        "p.max_used_mib, p.namespace, p.pod, p.container FROM gpu_processes p "
        "JOIN gpus g ON g.id = p.gpu WHERE p.last_ts >= ? AND p.first_ts <= ? "
        "ORDER BY p.first_ts, p.pid LIMIT ?"
    )
    async with conn.execute(sql, (since_ms, until_ms, MAX_PROCESSES * 16)) as cur:
        rows = [tuple(row) async for row in cur]
    return [_span((uuid, idx, pci), rest) for uuid, idx, pci, *rest in rows]


def _span(
    gpu: tuple[str, int, str],
    row: Sequence[Any],
    *,
    running: bool = True,
    ended_ts_ms: int | None = None,
) -> ProcessSpan:
    """A span from its row (pid, name, first, last, used, peak, namespace, pod, container)."""
    pid, name, t0, t1, used, peak, ns, pod, container = row
    ref = None if ns is None or pod is None else PodRef(ns, pod, container)
    return ProcessSpan(*gpu, pid, name, t0, t1, used, peak, ref, running, ended_ts_ms)

"""One XID in context: the GPU's telemetry before and after, neighbouring XIDs, processes, a cause.

:func:`correlate_xid` gathers what the store knows around an event and hands it to the
rules in :mod:`store.causes`, which name a likely cause with evidence sentences that carry
the numbers, so a person (or an assistant) can check the reasoning rather than trust it.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from store.causes import Cause, CauseInputs, Confidence, MetricAround, MetricStats, likely_cause
from store.errors import InvalidQueryError
from store.inventory import resolve_gpus
from store.processes import PodSpan, ProcessSpan, pods_at, processes_at
from store.queries import MAX_PAGE, XidFilter, get_xid, list_xids
from store.records import GpuStateEvent, InventoryGpu, Series, StoredXid
from store.retention import RetentionPolicy
from store.series import TIERS, choose_tier, metric_series
from store.trend import fit_trend, has_data

__all__ = [
    "CORRELATED_METRICS",
    "MAX_SIDE_MS",
    "Correlation",
    "NearbyXid",
    "correlate_xid",
]

CORRELATED_METRICS = (
    "temperature",
    "power",
    "sm_clock",
    "utilization",
    "memory_used",
    "throttle_thermal",
    "throttle_power",
    "pcie_replays",
    "ecc_uncorrected_volatile",
)
MAX_SIDE_MS = 24 * 3_600_000
WINDOW_BUCKETS = 30  # per side: 30 s buckets for the default 15 min before


@dataclass(frozen=True, slots=True)
class NearbyXid:
    """Another XID (or SXid) in the window; ``offset_s`` is negative before the event."""

    event: StoredXid
    offset_s: float
    same_gpu: bool


@dataclass(frozen=True, slots=True)
class Correlation:
    """An XID and its context over ``[since_ms, until_ms)``, with a likely cause.

    ``gpu`` is None when NVML never listed the event's GPU (then there is no telemetry or
    process list). ``nearby_truncated`` says the window held more XIDs than are listed.
    """

    event: StoredXid
    gpu: InventoryGpu | None
    since_ms: int
    until_ms: int
    metrics: tuple[MetricAround, ...]
    nearby_xids: tuple[NearbyXid, ...]
    nearby_truncated: bool
    processes: tuple[ProcessSpan, ...]
    gpu_events: tuple[GpuStateEvent, ...]
    likely_cause: Cause
    evidence: tuple[str, ...]
    confidence: Confidence
    pods: tuple[PodSpan, ...] = ()


async def correlate_xid(
    conn: aiosqlite.Connection,
    xid_id: int,
    *,
    before_ms: int = 15 * 60_000,
    after_ms: int = 5 * 60_000,
    now_ms: int,
    retention: RetentionPolicy | None = None,
) -> Correlation:
    """The event with id ``xid_id`` in context: ``before_ms`` before it to ``after_ms`` after."""
    if not 0 < before_ms <= MAX_SIDE_MS or not 0 <= after_ms <= MAX_SIDE_MS:
        raise InvalidQueryError(
            "before and after must each be at most 24 h (before more than 0), "
            f"got {before_ms} ms and {after_ms} ms"
        )
    event = await get_xid(conn, xid_id)
    if event is None:
        raise InvalidQueryError(
            f"no XID event with id {xid_id}: take the id from an XID listing "
            "(the list_xids tool or `xidwatch xids --json`)"
        )
    t = event.ts_ms
    since_ms, until_ms = t - before_ms, t + after_ms
    nearby, truncated = await _nearby(conn, event, since_ms, until_ms)
    found = await _gpu_of(conn, event)
    metrics: tuple[MetricAround, ...] = ()
    processes: list[ProcessSpan] = []
    pods: list[PodSpan] = []
    states: list[GpuStateEvent] = []
    if found is not None:
        gpu_id, gpu = found
        policy = retention or RetentionPolicy()
        metrics = await _metrics(conn, gpu, t, since_ms, min(until_ms, now_ms), now_ms, policy)
        processes = await processes_at(conn, gpu.info.uuid, t)
        pods = await pods_at(conn, gpu.info.uuid, t)
        states = await _gpu_events(conn, gpu_id, gpu.info.uuid, since_ms, until_ms)
    gpu_info = found[1] if found is not None else None
    cause, evidence, confidence = likely_cause(
        CauseInputs(
            event=event,
            gpu=gpu_info,
            metrics={m.metric: m for m in metrics},
            nearby=tuple((n.event, n.offset_s, n.same_gpu) for n in nearby),
            processes=tuple(processes),
            gpu_events=tuple(states),
            before_ms=before_ms,
        )
    )
    return Correlation(
        event=event,
        gpu=gpu_info,
        since_ms=since_ms,
        until_ms=until_ms,
        metrics=metrics,
        nearby_xids=tuple(nearby),
        nearby_truncated=truncated,
        processes=tuple(processes),
        gpu_events=tuple(states),
        likely_cause=cause,
        evidence=tuple(evidence),
        confidence=confidence,
        pods=tuple(pods),
    )


async def _nearby(
    conn: aiosqlite.Connection, event: StoredXid, since_ms: int, until_ms: int
) -> tuple[list[NearbyXid], bool]:
    page = await list_xids(
        conn, XidFilter(since_ms=since_ms, until_ms=until_ms + 1), limit=MAX_PAGE
    )
    out = [
        NearbyXid(
            e,
            (e.ts_ms - event.ts_ms) / 1000,
            e.kind == "xid" and e.pci_bus_id == event.pci_bus_id,
        )
        for e in sorted(page.events, key=lambda e: (e.ts_ms, e.id))
        if e.id != event.id
    ]
    return out, page.next_cursor is not None


async def _gpu_of(conn: aiosqlite.Connection, event: StoredXid) -> tuple[int, InventoryGpu] | None:
    """The inventory GPU the event was on: by UUID, else by PCI id (a GPU seen at the time)."""
    known = await resolve_gpus(conn, [])
    by_uuid = [(i, g) for i, g in known if event.gpu_uuid and g.info.uuid == event.gpu_uuid]
    if by_uuid:
        return by_uuid[0]
    slot = [(i, g) for i, g in known if g.info.pci_bus_id == event.pci_bus_id]
    slot.sort(key=lambda ig: (ig[1].first_seen_ms <= event.ts_ms, ig[1].last_seen_ms))
    return slot[-1] if slot else None


async def _metrics(
    conn: aiosqlite.Connection,
    gpu: InventoryGpu,
    t: int,
    since_ms: int,
    until_ms: int,
    now_ms: int,
    retention: RetentionPolicy,
) -> tuple[MetricAround, ...]:
    """Each correlated metric before and after ``t``; a rollup tier's window stops at its step.

    A 1-minute rollup bucket holding ``t`` also holds what came after it, so the "before"
    side ends at the last whole step before ``t`` (raw samples end exactly at ``t``).
    """
    # Raw samples while they are kept (windows are at most a day, so this stays bounded):
    # the seconds before an XID matter, and a rollup's step would blur them.
    tier = (
        TIERS[0]
        if now_ms - retention.raw_ms <= since_ms
        else choose_tier(since_ms, t, WINDOW_BUCKETS, now_ms=now_ms, retention=retention)
    )
    cut = t - t % tier.step_ms
    out = []
    for name in CORRELATED_METRICS:
        before = await _stats(conn, gpu, name, (since_ms, cut), tier.name, now_ms, retention)
        after = await _stats(conn, gpu, name, (cut, until_ms), tier.name, now_ms, retention)
        unit = before.unit if before else after.unit if after else ""
        out.append(MetricAround(name, unit, _summary(before), _summary(after)))
    return tuple(out)


async def _stats(
    conn: aiosqlite.Connection,
    gpu: InventoryGpu,
    metric: str,
    window: tuple[int, int],
    tier: str,
    now_ms: int,
    retention: RetentionPolicy,
) -> Series | None:
    since_ms, until_ms = window
    if until_ms <= since_ms:
        return None
    (series,) = await metric_series(
        conn,
        metric,
        since_ms=since_ms,
        until_ms=until_ms,
        buckets=WINDOW_BUCKETS,
        now_ms=now_ms,
        gpus=[gpu.info.uuid],
        retention=retention,
        tier=tier,
    )
    return series


def _summary(series: Series | None) -> MetricStats | None:
    if series is None:
        return None
    fit = fit_trend(series)
    data = [b for b in series.buckets if has_data(b)]
    return MetricStats(
        since_ms=series.since_ms,
        until_ms=series.until_ms,
        tier=series.tier,
        step_ms=series.step_ms,
        points=fit.points,
        samples=fit.samples,
        min=fit.min,
        avg=fit.avg,
        max=fit.max,
        first=data[0].avg if data else None,
        last=fit.last,
        slope_per_hour=fit.slope_per_hour,
    )


async def _gpu_events(
    conn: aiosqlite.Connection, gpu_id: int, uuid: str, since_ms: int, until_ms: int
) -> list[GpuStateEvent]:
    sql = (
        "SELECT ts_ms, state, detail FROM gpu_events WHERE gpu = ? AND ts_ms >= ? AND ts_ms <= ? "
        "ORDER BY ts_ms, id"
    )
    async with conn.execute(sql, (gpu_id, since_ms, until_ms)) as cur:
        return [GpuStateEvent(uuid, int(ts), state, detail) async for ts, state, detail in cur]

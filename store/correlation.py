"""One XID in context: the GPU's telemetry before and after, neighbouring XIDs, processes, a cause.

:func:`judge_xid` gathers what the store knows around an event and hands it to the rules
in :mod:`store.causes`; ``correlate_xid`` and every GPU's verdict in health both call it,
with the same fixed context (the metrics 15 min before and 5 min after, the node's XIDs
and processes a day either side), so the cause of an event is one answer wherever it is
asked. :func:`correlate_xid` adds the metrics over the window the caller chose.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from store.causes import (
    APP_CODES,
    CauseInputs,
    Judgement,
    MetricAround,
    MetricStats,
    likely_cause,
)
from store.errors import InvalidQueryError
from store.inventory import resolve_gpus
from store.processes import PodSpan, ProcessSpan, pods_at, processes_at, processes_between
from store.queries import MAX_PAGE, XidFilter, get_xid, list_xids
from store.records import GpuStateEvent, InventoryGpu, Series, StoredXid
from store.retention import RetentionPolicy
from store.series import TIERS, choose_tier, metric_series
from store.trend import data_span_ms, fit_trend, has_data, too_little_to_fit

__all__ = [
    "CORRELATED_METRICS",
    "MAX_SIDE_MS",
    "Correlation",
    "JudgeContext",
    "NearbyXid",
    "correlate_xid",
    "judge_context",
    "judge_xid",
]

CORRELATED_METRICS = (
    "temperature",
    "power",
    "sm_clock",
    "utilization",
    "memory_used",
    "throttle_thermal",
    "throttle_power",
    "throttle_hw_slowdown",
    "pcie_replays",
    "nvlink_errors",
    "ecc_corrected_volatile",
    "ecc_uncorrected_volatile",
    "remapped_rows_corrected",
    "remapped_rows_uncorrected",
)
# What the rules read (store.causes): heat, power, links and memory. The rest is for people.
JUDGED_METRICS = (
    "temperature",
    "power",
    "sm_clock",
    "throttle_thermal",
    "throttle_hw_slowdown",
    "pcie_replays",
    "nvlink_errors",
    "ecc_corrected_volatile",
    "ecc_uncorrected_volatile",
)
MAX_SIDE_MS = 24 * 3_600_000
MAX_CONTEXT_XIDS = 20_000
WINDOW_BUCKETS = 30  # per side at most; fewer when fewer samples are there
JUDGE_BEFORE_MS = 15 * 60_000
JUDGE_AFTER_MS = 5 * 60_000
CONTEXT_MS = 24 * 3_600_000  # XIDs and processes either side that tell workloads apart


@dataclass(frozen=True, slots=True)
class NearbyXid:
    """Another XID (or SXid) in the window; ``offset_s`` is negative before the event."""

    event: StoredXid
    offset_s: float
    same_gpu: bool


@dataclass(frozen=True, slots=True)
class Correlation:
    """An XID and its context over ``[since_ms, until_ms)``, with its judgement.

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
    judgement: Judgement
    pods: tuple[PodSpan, ...] = ()


async def correlate_xid(
    conn: aiosqlite.Connection,
    xid_id: int,
    *,
    before_ms: int = JUDGE_BEFORE_MS,
    after_ms: int = JUDGE_AFTER_MS,
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
            "(the list_xid_events tool or `xidwatch xids --json`)"
        )
    t = event.ts_ms
    since_ms, until_ms = t - before_ms, t + after_ms
    nearby, truncated = await _nearby(conn, event, since_ms, until_ms)
    found = await gpu_of(conn, event)
    policy = retention or RetentionPolicy()
    judgement = await judge_xid(conn, event, found=found, now_ms=now_ms, retention=policy)
    metrics: tuple[MetricAround, ...] = ()
    processes: list[ProcessSpan] = []
    pods: list[PodSpan] = []
    states: list[GpuStateEvent] = []
    if found is not None:
        gpu_id, gpu = found
        metrics = await _metrics(
            conn, gpu_id, gpu, t, since_ms, min(until_ms, now_ms), now_ms, policy
        )
        processes = await processes_at(conn, gpu.info.uuid, t)
        pods = await pods_at(conn, gpu.info.uuid, t)
        states = await _gpu_events(conn, gpu_id, gpu.info.uuid, since_ms, until_ms)
    return Correlation(
        event=event,
        gpu=found[1] if found is not None else None,
        since_ms=since_ms,
        until_ms=until_ms,
        metrics=metrics,
        nearby_xids=tuple(nearby),
        nearby_truncated=truncated,
        processes=tuple(processes),
        gpu_events=tuple(states),
        judgement=judgement,
        pods=tuple(pods),
    )


@dataclass(frozen=True, slots=True)
class JudgeContext:
    """The node's XIDs (newest first) and processes over a span, read once for many
    judgements (health judges every GPU's XIDs); each judgement takes its own day either side.
    """

    xids: tuple[StoredXid, ...]
    workloads: tuple[ProcessSpan, ...]


async def judge_context(
    conn: aiosqlite.Connection, since_ms: int, until_ms: int, *, now_ms: int
) -> JudgeContext:
    """The context of every XID between ``since_ms`` and ``until_ms``, in two reads."""
    lo, hi = since_ms - CONTEXT_MS, min(now_ms, until_ms + CONTEXT_MS) + 1
    xids: list[StoredXid] = []
    cursor = None
    while len(xids) < MAX_CONTEXT_XIDS:
        page = await list_xids(
            conn, XidFilter(since_ms=lo, until_ms=hi), limit=MAX_PAGE, cursor=cursor
        )
        xids += page.events
        if (cursor := page.next_cursor) is None:
            break
    return JudgeContext(tuple(xids), tuple(await processes_between(conn, lo, hi)))


async def judge_xid(
    conn: aiosqlite.Connection,
    event: StoredXid,
    *,
    found: tuple[int, InventoryGpu] | None,
    now_ms: int,
    retention: RetentionPolicy,
    context: JudgeContext | None = None,
) -> Judgement:
    """``event``'s cause and action from its fixed context (see the module's docstring).

    ``context`` read beforehand saves the reads of XIDs and processes; the answer is the
    same. Telemetry is read only for codes whose cause depends on it.
    """
    t = event.ts_ms
    lo, hi = t - CONTEXT_MS, min(now_ms, t + CONTEXT_MS) + 1
    if context is None:
        context = JudgeContext(
            (await list_xids(conn, XidFilter(since_ms=lo, until_ms=hi), limit=MAX_PAGE)).events,
            tuple(await processes_between(conn, lo, hi - 1)),
        )
    around = [e for e in context.xids if e.last_ts_ms >= lo and e.ts_ms < hi][:MAX_PAGE]
    nearby = tuple(
        (e, (e.ts_ms - t) / 1000, e.kind == "xid" and e.pci_bus_id == event.pci_bus_id)
        for e in sorted(around, key=lambda e: (e.ts_ms, e.id))
        if e.id != event.id
    )
    workloads = tuple(p for p in context.workloads if p.last_ts_ms >= lo and p.first_ts_ms < hi)
    metrics: tuple[MetricAround, ...] = ()
    states: list[GpuStateEvent] = []
    if found is not None:
        gpu_id, gpu = found
        if event.xid not in APP_CODES | {45}:
            window = (t - JUDGE_BEFORE_MS, min(t + JUDGE_AFTER_MS, now_ms))
            metrics = await _metrics(
                conn, gpu_id, gpu, t, *window, now_ms, retention, names=JUDGED_METRICS
            )
        states = await _gpu_events(conn, gpu_id, gpu.info.uuid, t, t + JUDGE_AFTER_MS)
    return likely_cause(
        CauseInputs(
            event=event,
            gpu=found[1] if found is not None else None,
            metrics={m.metric: m for m in metrics},
            nearby=nearby,
            workloads=workloads,
            gpu_events=tuple(states),
            before_ms=JUDGE_BEFORE_MS,
        )
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


async def gpu_of(conn: aiosqlite.Connection, event: StoredXid) -> tuple[int, InventoryGpu] | None:
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
    gpu_id: int,
    gpu: InventoryGpu,
    t: int,
    since_ms: int,
    until_ms: int,
    now_ms: int,
    retention: RetentionPolicy,
    *,
    names: tuple[str, ...] = CORRELATED_METRICS,
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
    sides = [(since_ms, cut, WINDOW_BUCKETS), (cut, until_ms, WINDOW_BUCKETS)]
    if tier is TIERS[0]:
        sides = [await _sampled(conn, gpu_id, a, b) for a, b, _ in sides]
    out = []
    for name in names:
        before, after = [
            await _stats(conn, (gpu_id, gpu), name, side, tier.name, now_ms, retention)
            for side in sides
        ]
        unit = before.unit if before else after.unit if after else ""
        out.append(MetricAround(name, unit, _summary(before), _summary(after)))
    return tuple(out)


async def _sampled(
    conn: aiosqlite.Connection, gpu_id: int, since_ms: int, until_ms: int
) -> tuple[int, int, int]:
    """A raw side narrowed to the samples actually in it, with their count as buckets.

    So a climb that took 30 s of a 15 min window is not averaged into one bucket, and no
    bucket is narrower than the sampling interval (one sample a bucket at most).
    """
    sql = "SELECT min(ts), max(ts), count(*) FROM samples WHERE gpu = ? AND ts >= ? AND ts < ?"
    async with conn.execute(sql, (gpu_id, since_ms, until_ms)) as cur:
        row = await cur.fetchone()
    if row is None or not row[2]:
        return since_ms, until_ms, WINDOW_BUCKETS
    first, last, n = row
    return int(first), int(last) + 1, min(WINDOW_BUCKETS, int(n))


async def _stats(
    conn: aiosqlite.Connection,
    gpu: tuple[int, InventoryGpu],
    metric: str,
    window: tuple[int, int, int],
    tier: str,
    now_ms: int,
    retention: RetentionPolicy,
) -> Series | None:
    since_ms, until_ms, buckets = window
    if until_ms <= since_ms:
        return None
    (series,) = await metric_series(
        conn,
        metric,
        since_ms=since_ms,
        until_ms=until_ms,
        buckets=buckets,
        now_ms=now_ms,
        resolved=[gpu],
        retention=retention,
        tier=tier,
    )
    return series


def _summary(series: Series | None) -> MetricStats | None:
    if series is None:
        return None
    fit = fit_trend(series)
    data = [b for b in series.buckets if has_data(b)]
    # A slope from a few buckets or a few minutes says nothing (+23,155 °C/h from 12 s).
    meaningful = too_little_to_fit(fit.points, data_span_ms(series, data)) is None
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
        slope_per_hour=fit.slope_per_hour if meaningful else None,
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

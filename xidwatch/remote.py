"""A node's MCP answers back into the store's records, so the node CLI's tables print them.

``kubectl xidwatch`` asks the nodes through the gateway and gets what ``list_xid_events``,
``get_gpu_health``, ``get_metric_history`` and ``get_metric_trend`` answer (the ``--json``
contracts). The tables of ``xidwatch xids`` and ``xidwatch health`` read the store's
records; turning the answers back into those records keeps one table per command, whichever
side of the network it runs on. The trend chart is drawn from the answers on both sides
(:func:`xidwatch.charts.render_answers`), so it is the same chart by construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, get_args

from mcp_server.models import GpuModel, HealthResult, SampleModel, XidEventModel
from mcp_server.series_models import SeriesModel, TrendModel
from store.coverage import Coverage
from store.health import GpuHealth, HealthReport, Status
from store.records import Bucket, GpuInfo, GpuSample, InventoryGpu, PodRef, Series, StoredXid
from store.trend import Confidence, Reading, Threshold, TrendFit, TrendReport, fit_trend
from store.windows import parse_instant_ms

__all__ = ["health_report", "stored_xid", "trend_records"]

_STATUS: dict[str, Status] = {"ok": "ok", "warning": "warning", "critical": "critical"}
_CONFIDENCE: dict[str, Confidence] = {c: c for c in get_args(Confidence)}


def stored_xid(answer: dict[str, Any]) -> StoredXid:
    """One event of a ``list_xid_events`` answer."""
    e = XidEventModel.model_validate(answer)
    pod = PodRef(e.namespace, e.pod, e.container) if e.namespace and e.pod else None
    ts_ms = _ms(e.ts)
    return StoredXid(
        id=e.id,
        ts_ms=ts_ms,
        last_ts_ms=_ms(e.last_ts),
        received_ms=ts_ms,
        count=e.count,
        burst=e.burst,
        node=e.node,
        kind="sxid" if e.kind == "sxid" else "xid",
        xid=e.xid,
        pci_bus_id=e.pci_bus_id,
        gpu_uuid=e.gpu_uuid,
        mig_gi=e.mig_gi,
        mig_ci=e.mig_ci,
        pid=e.pid,
        process=e.process,
        message=e.message,
        raw=e.message,
        source=e.source,
        action=e.immediate_action,
        boot_id=e.boot_id,
        seq=e.seq,
        injected=e.injected,
        pod=pod,
    )


def health_report(answer: dict[str, Any]) -> HealthReport:
    """A ``get_gpu_health`` answer."""
    r = HealthResult.model_validate(answer)
    c = r.coverage
    coverage = Coverage(
        recording_since_ms=_ms_or_none(c.recording_since),
        last_sample_ms=_ms_or_none(c.last_sample),
        last_kernel_record_ms=_ms_or_none(c.last_kernel_record),
        first_xid_ms=_ms_or_none(c.first_xid),
        last_xid_ms=_ms_or_none(c.last_xid),
        gaps=tuple((_ms(a), _ms(b)) for a, b in c.gaps),
    )
    gpus = tuple(
        GpuHealth(
            pci_bus_id=h.pci_bus_id,
            gpu=_inventory(h.gpu) if h.gpu else None,
            sample=_sample(h.gpu.uuid if h.gpu else "", h.sample) if h.sample else None,
            status=_STATUS[h.status],
            score=h.score,
            verdict=h.verdict,
            findings=tuple(h.findings),
        )
        for h in r.gpus
    )
    return HealthReport(r.node, _ms(r.since), gpus, r.node_verdict, coverage)


def trend_records(
    series: Mapping[str, Any], trend: Mapping[str, Any]
) -> tuple[Series, TrendReport]:
    """A ``get_metric_history`` series and the ``get_metric_trend`` answer for its GPU.

    The report holds what the answer says; its fit (min, avg, max, change) is the series'
    own, as the node CLI's is.
    """
    s = SeriesModel.model_validate(series)
    buckets = tuple(Bucket(_ms(b.ts), b.min, b.avg, b.max, b.count) for b in s.buckets)
    record = Series(
        uuid=s.uuid,
        index=s.gpu,
        pci_bus_id=s.pci_bus_id,
        metric=s.metric,
        unit=s.unit,
        tier=s.tier,
        step_ms=s.step_ms,
        since_ms=_ms(s.since),
        until_ms=_ms(s.until),
        buckets=buckets,
    )
    return record, _report(TrendModel.model_validate(trend), fit_trend(record))


def _report(t: TrendModel, fit: TrendFit) -> TrendReport:
    now = None
    if t.current is not None and t.current_ts is not None:
        now = Reading(_ms(t.current_ts), t.current, t.current_from or "sample")
    limit = None
    if t.threshold is not None:
        beyond = (t.further_limit.name, t.further_limit.value) if t.further_limit else None
        above = t.threshold_direction != "below"
        limit = Threshold(t.threshold, t.threshold_source or "", above=above, beyond=beyond)
    return TrendReport(
        fit=fit,
        status=t.status,
        reason=t.reason,
        current=now,
        slope=t.slope_per_day if t.slope_per_day is not None else t.slope_per_hour,
        slope_per="day" if t.slope_per_day is not None else "hour",
        r_squared=t.r_squared,
        slope_reason=t.slope_reason,
        span_ms=round(t.span_minutes * 60_000),
        threshold=limit,
        crossed=t.crossed,
        crossed_at_ms=_ms_or_none(t.crossed_at),
        hours_to_threshold=t.hours_to_threshold,
        confidence=_CONFIDENCE.get(t.confidence, "none"),
    )


def _inventory(g: GpuModel) -> InventoryGpu:
    info = GpuInfo(**{f.name: getattr(g, f.name) for f in fields(GpuInfo)})
    return InventoryGpu(
        info=info,
        first_seen_ms=_ms_or_none(g.first_seen) or 0,
        last_seen_ms=_ms_or_none(g.last_seen) or 0,
        lost_since_ms=_ms_or_none(g.lost_since),
    )


def _sample(uuid: str, s: SampleModel) -> GpuSample:
    readings = s.model_dump(exclude={"ts", "ts_ms", "throttle_reasons"})
    return GpuSample(uuid=uuid, ts_ms=s.ts_ms, **readings)


def _ms(text: str) -> int:
    return parse_instant_ms(text, now_ms=0)


def _ms_or_none(text: str | None) -> int | None:
    return _ms(text) if text else None

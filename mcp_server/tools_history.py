"""MCP tools over the time series: metric history in buckets, and trends with a time-to-limit."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from mcp_server.annotations import READ_ONLY, compact
from mcp_server.deps import ToolDeps
from mcp_server.models import SeriesModel
from mcp_server.params import Gpu, GpuOrAll, MetricName, Since, Until
from store.inventory import resolve_gpus
from store.records import Series
from store.series import metric_series, series_report
from store.telemetry import GpuLimit, get_metric
from store.trend import TrendReport, TrendStatus, pick_threshold, round_sig
from store.windows import format_ts

__all__ = ["HistoryResult", "TrendModel", "TrendResult", "register_history_tools"]

# The trend fit's resolution: at most this many buckets over the window (fewer when the
# samples are sparser than that; see store.series.metric_series).
TREND_BUCKETS = 60


class HistoryResult(BaseModel):
    """Bucketed series, one per (GPU, metric); ``tier`` and ``step_ms`` say how fine they are."""

    series: list[SeriesModel]


class TrendModel(BaseModel):
    """One GPU's trend: latest reading, threshold crossed or not, slope and projection if earned.

    The CLI's ``trend --json`` stats are this model too. Numbers have 4 significant digits;
    times are ISO 8601 UTC strings.
    """

    gpu: int
    pci_bus_id: str
    metric: str
    unit: str
    status: TrendStatus = Field(
        description="crossed (the latest reading is at or past the threshold), approaching "
        "(hours_to_threshold given), not_approaching (flat or moving away), no_projection "
        "(too little data or the load changed: see reason), no_threshold, no_data"
    )
    current: float | None = Field(description="the latest reading (the newest raw sample)")
    current_ts: str | None
    current_from: Literal["sample", "bucket max", "bucket min"] | None = Field(
        description="sample, or the last bucket's max (min for a floor) once raw samples expired"
    )
    points: int = Field(description="buckets with data behind the fit")
    span_minutes: float = Field(description="minutes of the window covered by data")
    min: float | None
    avg: float | None
    max: float | None
    change: float | None = Field(description="last bucket's average minus the first's")
    slope_per_hour: float | None = Field(
        description="set for windows up to 3 days, when at least 5 points span 10 minutes"
    )
    slope_per_day: float | None = Field(
        description="instead of slope_per_hour for windows over 3 days"
    )
    r_squared: float | None = Field(description="fit quality; null with the slope")
    slope_reason: str | None = Field(description="why there is no slope, when there is none")
    threshold: float | None
    threshold_source: str | None = Field(
        description="given, the GPU's own limit, or the metric's default and why"
    )
    crossed: bool | None = Field(description="latest reading at or past the threshold")
    crossed_at: str | None = Field(
        description="when the readings went past the threshold and stayed there"
    )
    hours_to_threshold: float | None
    confidence: str = Field(description="high, medium, low or none: how far to trust the ETA")
    reason: str

    @classmethod
    def from_report(cls, s: Series, r: TrendReport) -> TrendModel:
        fit, now, limit = r.fit, r.current, r.threshold
        return cls(
            gpu=s.index,
            pci_bus_id=s.pci_bus_id,
            metric=s.metric,
            unit=s.unit,
            status=r.status,
            current=round_sig(now.value) if now else None,
            current_ts=format_ts(now.ts_ms) if now else None,
            current_from=now.source if now else None,
            points=fit.points,
            span_minutes=round(r.span_ms / 60_000, 1),
            min=round_sig(fit.min),
            avg=round_sig(fit.avg),
            max=round_sig(fit.max),
            change=round_sig(fit.change) if fit.points >= 2 else None,
            slope_per_hour=round_sig(r.slope) if r.slope_per == "hour" else None,
            slope_per_day=round_sig(r.slope) if r.slope_per == "day" else None,
            r_squared=None if r.r_squared is None else round(r.r_squared, 3),
            slope_reason=r.slope_reason,
            threshold=limit.value if limit else None,
            threshold_source=limit.source if limit else None,
            crossed=r.crossed,
            crossed_at=format_ts(r.crossed_at_ms) if r.crossed_at_ms is not None else None,
            hours_to_threshold=round_sig(r.hours_to_threshold, 3),
            confidence=r.confidence,
            reason=r.reason,
        )


class TrendResult(BaseModel):
    trends: list[TrendModel]


def register_history_tools(server: MCPServer, deps: ToolDeps) -> None:
    @server.tool(annotations=READ_ONLY)
    async def get_metric_history(
        gpu: Gpu,
        metrics: Annotated[
            list[MetricName], Field(min_length=1, max_length=8, description="metric names")
        ],
        since: Since = "24h",
        until: Until = None,
        buckets: Annotated[
            int, Field(ge=1, le=1000, description="at most this many buckets per series")
        ] = 120,
    ) -> Annotated[CallToolResult, HistoryResult]:
        """One or more metrics for a GPU over a window, as buckets with min/avg/max.

        The coarsest storage tier that still gives the resolution asked for is used (raw
        samples, 1-minute or 1-hour rollups); windows up to 800 days. A bucket is never
        narrower than the interval between samples, so a short window gets fewer buckets
        than asked; buckets without samples are left out (``empty_buckets`` counts them).
        """
        since_ms = deps.instant(since, name="since")
        until_ms = deps.instant(until, name="until") if until else deps.now_ms()
        out: list[SeriesModel] = []
        async with deps.reader() as conn:
            for metric in metrics:
                series = await metric_series(
                    conn,
                    metric,
                    since_ms=since_ms,
                    until_ms=until_ms,
                    buckets=buckets,
                    now_ms=deps.now_ms(),
                    gpus=[gpu],
                    retention=deps.retention,
                    no_finer_than_samples=True,
                )
                out.extend(SeriesModel.from_series(s) for s in series)
        return compact(HistoryResult(series=out))

    @server.tool(annotations=READ_ONLY)
    async def get_metric_trend(
        metric: MetricName,
        gpu: GpuOrAll = None,
        since: Since = "24h",
        threshold: Annotated[
            float | None, Field(description="a value to judge the metric against")
        ] = None,
        threshold_from: Annotated[
            GpuLimit | None,
            Field(description="take the threshold from the GPU's own limit instead"),
        ] = None,
        direction: Annotated[
            Literal["above", "below"],
            Field(
                description="for a given threshold: 'above' (default) if reaching it from "
                "below is the problem (heat, power, errors), 'below' for a floor (active "
                "NVLinks, clocks)"
            ),
        ] = "above",
    ) -> Annotated[CallToolResult, TrendResult]:
        """Latest reading, whether it has crossed a threshold, the slope, and when it would cross.

        With no threshold given, the metric's default applies where NVIDIA has one:
        temperature the GPU's own slowdown temperature, ecc_uncorrected_volatile 1,
        remapped_rows_uncorrected 8, remap_pending and remap_failure 1. A reading already
        past the threshold is ``crossed`` (with ``crossed_at``), not projected. A slope and a
        projection need 5 buckets with data over 10 minutes, and none is made when the load
        changed inside the window (the latter half moving against, or at under half the
        pace of, the whole); ``reason`` says why. ``confidence`` weighs the fit (r²), the
        points, and how far past the observed span the projection reaches.
        """
        if threshold is not None and threshold_from is not None:
            raise ToolError("give threshold or threshold_from, not both")
        since_ms = deps.instant(since, name="since")
        now = deps.now_ms()
        m = get_metric(metric)
        trends: list[TrendModel] = []
        async with deps.reader() as conn:
            gpus = {i.info.uuid: i for _, i in await resolve_gpus(conn, [gpu] if gpu else [])}
            series = await metric_series(
                conn,
                m,
                since_ms=since_ms,
                until_ms=now,
                buckets=TREND_BUCKETS,
                now_ms=now,
                gpus=[gpu] if gpu else [],
                retention=deps.retention,
                no_finer_than_samples=True,
            )
            for s in series:
                limit = pick_threshold(
                    m,
                    gpus[s.uuid].info,
                    given=threshold,
                    limit=threshold_from,
                    above=direction == "above",
                )
                report = await series_report(conn, m, s, limit)
                trends.append(TrendModel.from_report(s, report))
        return compact(TrendResult(trends=trends))

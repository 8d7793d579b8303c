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
from store.series import metric_series
from store.trend import eta_to_threshold, fit_trend

__all__ = ["register_history_tools"]


class HistoryResult(BaseModel):
    """Bucketed series, one per (GPU, metric); ``tier`` and ``step_ms`` say how fine they are."""

    series: list[SeriesModel]


class TrendModel(BaseModel):
    gpu: int
    pci_bus_id: str
    metric: str
    unit: str
    points: int
    current: float | None = Field(description="the last bucket's average")
    min: float | None
    avg: float | None
    max: float | None
    slope_per_hour: float | None
    change: float | None = Field(description="last bucket's average minus the first's")
    r_squared: float | None
    threshold: float | None
    threshold_source: str | None
    hours_to_threshold: float | None
    confidence: str = Field(description="high, medium, low or none: how far to trust the ETA")
    reason: str


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
        buckets: Annotated[int, Field(ge=1, le=1000, description="buckets per series")] = 120,
    ) -> Annotated[CallToolResult, HistoryResult]:
        """One or more metrics for a GPU over a window, as buckets with min/avg/max.

        The coarsest storage tier that still gives the resolution asked for is used (raw
        samples, 1-minute or 1-hour rollups); windows up to 800 days.
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
                )
                out.extend(SeriesModel.from_series(s) for s in series)
        return compact(HistoryResult(series=out))

    @server.tool(annotations=READ_ONLY)
    async def get_metric_trend(
        metric: MetricName,
        gpu: GpuOrAll = None,
        since: Since = "24h",
        threshold: Annotated[
            float | None, Field(description="a value to project the time to reach")
        ] = None,
        threshold_from: Annotated[
            Literal["slowdown_temp", "shutdown_temp", "power_limit"] | None,
            Field(description="take the threshold from the GPU's own limit instead"),
        ] = None,
    ) -> Annotated[CallToolResult, TrendResult]:
        """Slope per hour and change over the window, and when the metric would cross a threshold.

        The fit is a least-squares line through the bucket averages; ``confidence`` says how
        far to trust the projection (fit quality, points, how far ahead it reaches).
        """
        if threshold is not None and threshold_from is not None:
            raise ToolError("give threshold or threshold_from, not both")
        since_ms = deps.instant(since, name="since")
        now = deps.now_ms()
        trends: list[TrendModel] = []
        async with deps.reader() as conn:
            gpus = {i.info.uuid: i for _, i in await resolve_gpus(conn, [gpu] if gpu else [])}
            series = await metric_series(
                conn,
                metric,
                since_ms=since_ms,
                until_ms=now,
                buckets=60,
                now_ms=now,
                gpus=[gpu] if gpu else [],
                retention=deps.retention,
            )
        for s in series:
            info = gpus[s.uuid].info
            limit, source = threshold, "given" if threshold is not None else None
            if threshold_from is not None:
                limit = {
                    "slowdown_temp": info.slowdown_temp_c,
                    "shutdown_temp": info.shutdown_temp_c,
                    "power_limit": info.power_limit_default_w,
                }[threshold_from]
                source = f"{threshold_from} of GPU {info.index}" if limit is not None else None
            fit = fit_trend(s)
            eta = (
                eta_to_threshold(fit, fit.last, limit)
                if limit is not None and fit.last is not None
                else None
            )
            trends.append(
                TrendModel(
                    gpu=s.index,
                    pci_bus_id=s.pci_bus_id,
                    metric=s.metric,
                    unit=s.unit,
                    points=fit.points,
                    current=fit.last,
                    min=fit.min,
                    avg=fit.avg,
                    max=fit.max,
                    slope_per_hour=fit.slope_per_hour,
                    change=fit.change,
                    r_squared=fit.r_squared,
                    threshold=limit,
                    threshold_source=source,
                    hours_to_threshold=eta.hours if eta else None,
                    confidence=eta.confidence if eta else "none",
                    reason=eta.reason if eta else _no_eta_reason(limit, fit.points),
                )
            )
        return compact(TrendResult(trends=trends))


def _no_eta_reason(limit: float | None, points: int) -> str:
    if points == 0:
        return "no data in the window"
    if limit is None:
        return "no threshold asked for (or the GPU does not report that limit)"
    return "not enough data to fit a line"

"""MCP tools over the time series: metric history in buckets, and trends with a time-to-limit."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult
from pydantic import Field

from mcp_server.deps import ToolDeps
from mcp_server.params import Gpu, GpuOrAll, MetricName, Since, Until
from mcp_server.results import compact
from mcp_server.series_models import HistoryResult, SeriesModel, TrendModel, TrendResult
from store.inventory import resolve_gpus
from store.series import metric_series, series_report
from store.telemetry import GpuLimit, get_metric
from store.trend import pick_threshold

__all__ = ["TREND_BUCKETS", "get_metric_history", "get_metric_trend"]

# The trend fit's resolution: at most this many buckets over the window (fewer when the
# samples are sparser than that; see store.series.metric_series).
TREND_BUCKETS = 60


async def get_metric_history(
    deps: ToolDeps,
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


async def get_metric_trend(
    deps: ToolDeps,
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

"""``xidwatch trend`` and ``xidwatch health``: what the GPUs have been doing, from the store."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import shutil
import textwrap
from pathlib import Path
from typing import Annotated

import typer

from store.acks import record_ack
from store.db import open_reader
from store.errors import InvalidQueryError
from store.health import GpuHealth, HealthReport, health_report
from store.inventory import resolve_gpus, stored_node_name
from store.queries import MAX_PAGE, XidFilter, list_xids
from store.records import Series, StoredXid
from store.series import metric_series, series_report
from store.telemetry import Metric, get_metric
from store.trend import TrendReport, pick_threshold
from store.windows import format_ts, parse_instant_ms
from watcher.clock import now_ms
from xidwatch.charts import list_metrics_text, render_trend, trend_csv, trend_json
from xidwatch.options import DEFAULT_DB, DbOption
from xidwatch.render import health_json

__all__ = ["HEALTH_EXIT", "ack", "health", "health_exit_status", "health_lines", "trend"]


def trend(
    db: DbOption = DEFAULT_DB,
    metric: Annotated[
        str, typer.Option(help="Metric name (see --list-metrics).", show_default=True)
    ] = "temperature",
    gpu: Annotated[
        list[str] | None,
        typer.Option(help="GPU index, UUID or PCI bus id (repeatable; default all)."),
    ] = None,
    since: Annotated[str, typer.Option(help="Window start: 24h, 7d, or an ISO time.")] = "24h",
    until: Annotated[str | None, typer.Option(help="Window end (default now).")] = None,
    buckets: Annotated[int, typer.Option(min=1, max=2000, help="Points per GPU.")] = 60,
    tier: Annotated[
        str | None, typer.Option(help="Force a tier: raw, 1m or 1h (default: chosen).")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="A ceiling to judge the metric against (default: the metric's own, e.g. "
            "the GPU's slowdown temperature)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Buckets as JSON.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Buckets as CSV.")] = False,
    list_metrics: Annotated[
        bool, typer.Option("--list-metrics", help="List metric names and exit.")
    ] = False,
) -> None:
    """A metric per GPU over time: a chart, XIDs, the latest reading against a threshold, slope."""
    if list_metrics:
        typer.echo(list_metrics_text())
        return
    if as_json and as_csv:
        raise InvalidQueryError("choose one of --json and --csv")
    m = get_metric(metric)
    now = now_ms()
    since_ms = parse_instant_ms(since, now_ms=now)
    until_ms = parse_instant_ms(until, now_ms=now) if until else now
    series, xids, reports = asyncio.run(
        _trend_data(db, m, gpu or [], since_ms, until_ms, buckets, tier, now, threshold)
    )
    if as_json:
        typer.echo(json.dumps(trend_json(series, xids, m, reports), indent=2))
    elif as_csv:
        typer.echo(trend_csv(series), nl=False)
    else:
        width = max(20, min(120, shutil.get_terminal_size().columns - 4))
        typer.echo(render_trend(series, xids, metric=m, width=width, reports=reports))


async def _trend_data(
    db: Path,
    metric: Metric,
    gpus: list[str],
    since_ms: int,
    until_ms: int,
    buckets: int,
    tier: str | None,
    now: int,
    threshold: float | None,
) -> tuple[list[Series], list[StoredXid], dict[str, TrendReport]]:
    conn = await open_reader(db)
    try:
        series = await metric_series(
            conn,
            metric,
            since_ms=since_ms,
            until_ms=until_ms,
            buckets=buckets,
            now_ms=now,
            gpus=gpus,
            tier=tier,
            no_finer_than_samples=True,
        )
        infos = {g.info.uuid: g.info for _, g in await resolve_gpus(conn, gpus)}
        reports = {
            s.uuid: await series_report(
                conn, metric, s, pick_threshold(metric, infos[s.uuid], given=threshold)
            )
            for s in series
        }
        pcis = [s.pci_bus_id for s in series]
        page = await list_xids(
            conn,
            XidFilter(since_ms=since_ms, until_ms=until_ms, pci_bus_ids=pcis),
            limit=MAX_PAGE,
        )
    finally:
        await conn.close()
    return series, list(page.events), reports


def health(
    db: DbOption = DEFAULT_DB,
    since: Annotated[str, typer.Option(help="How far back XIDs count against a GPU.")] = "24h",
    gpu: Annotated[
        str | None, typer.Option(help="One GPU: index, UUID or prefix, or PCI bus id.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of lines.")] = False,
) -> None:
    """Per GPU one verdict (cause, the one action, why, the steps) and the node's verdict.

    Exit status, for scripts: 0 every GPU ok (or none known), 3 a warning, 4 a critical GPU
    (2 is an error, as for every command).
    """
    report = asyncio.run(_health_report(db, since, gpu))
    if as_json:
        typer.echo(health_json(report))
    else:
        typer.echo(health_text(report))
    status = health_exit_status(report)
    if status:
        raise typer.Exit(status)


HEALTH_EXIT = {"ok": 0, "warning": 3, "critical": 4}  # `xidwatch health`'s exit statuses


def health_exit_status(report: HealthReport) -> int:
    """The worst GPU's status as an exit status: 0 ok, 3 warning, 4 critical."""
    return max((HEALTH_EXIT[h.status] for h in report.gpus), default=0)


async def health_lines(db: Path, *, since: str = "24h") -> str:
    """``xidwatch health``'s text for ``db`` (the demo prints it too)."""
    return health_text(await _health_report(db, since, None))


async def _health_report(db: Path, since: str, gpu: str | None) -> HealthReport:
    now = now_ms()
    conn = await open_reader(db)
    try:
        return await health_report(
            conn,
            since_ms=parse_instant_ms(since, now_ms=now),
            now_ms=now,
            node=await stored_node_name(conn) or "",
            selectors=[gpu] if gpu else [],
        )
    finally:
        await conn.close()


def health_text(report: HealthReport) -> str:
    """A block per GPU (readings, verdict, why, steps), then the node's verdict."""
    if not report.gpus:
        return "no GPUs in the store: is the daemon sampling NVML (xidwatch run)?"
    width = min(shutil.get_terminal_size((100, 20)).columns, 120)
    blocks = [_health_block(h, width) for h in report.gpus]
    v = report.node_verdict
    blocks.append(_wrap(f"node: {v.because}", width, "  "))
    return "\n".join(blocks)


def _health_block(h: GpuHealth, width: int) -> str:
    v = h.verdict
    index = f"{h.gpu.info.index:<2}" if h.gpu else "- "
    name = h.gpu.info.name[:22] if h.gpu else "(seen only in XID lines)"
    status = f"{h.status.upper()} ({h.score})"
    line = f"GPU {index} {h.pci_bus_id}  {name:<22} {_readings(h):<30} {status}"
    if v.action == "none":
        return f"{line}: {v.because}" if v.cleared else line
    out = [f"{line}  -> {v.action} ({v.cause}, {v.confidence} confidence)"]
    out.append(_wrap(f"because: {v.because}", width, "    "))
    out += [_wrap(f"{i}. {step}", width, "    ") for i, step in enumerate(v.steps, 1)]
    return "\n".join(out)


def _readings(h: GpuHealth) -> str:
    s = h.sample
    if s is None:
        return "lost: no current readings" if h.gpu and h.gpu.lost_since_ms else "no sample"
    parts = []
    if s.temperature_c is not None:
        parts.append(f"{s.temperature_c}°C")
    if s.power_w is not None:
        limit = f"/{s.power_limit_w:.0f}" if s.power_limit_w else ""
        parts.append(f"{s.power_w:.0f}{limit}W")
    if s.gpu_util_pct is not None:
        parts.append(f"util {s.gpu_util_pct}%")
    if s.memory_used_bytes is not None and s.memory_total_bytes:
        parts.append(f"mem {s.memory_used_bytes / s.memory_total_bytes:.0%}")
    return " ".join(parts) or "no readings"


def _wrap(text: str, width: int, indent: str) -> str:
    return textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent + "  ")


def ack(
    gpu: Annotated[str, typer.Option(help="GPU index, UUID or PCI bus id.")],
    reason: Annotated[str, typer.Option(help="What was done or decided (ticket, reset, RMA).")],
    db: DbOption = DEFAULT_DB,
    who: Annotated[
        str | None, typer.Option(help="Who acknowledges (default: the login name).")
    ] = None,
) -> None:
    """Acknowledge a GPU's fatal XIDs: health then shows them as cleared, by whom and why."""
    by = who or _login_name()
    done = asyncio.run(record_ack(db, gpu, reason=reason, who=by, now_ms=now_ms()))
    typer.echo(
        f"acknowledged GPU {done.pci_bus_id} at {format_ts(done.ts_ms)} by {done.who}: "
        f"{done.reason}"
    )


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"

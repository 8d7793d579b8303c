"""``xidwatch trend`` and ``xidwatch health``: what the GPUs have been doing, from the store."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import shutil
from pathlib import Path
from typing import Annotated

import typer

from cli.charts import list_metrics_text, render_trend, trend_csv, trend_json
from cli.options import DEFAULT_DB, DbOption
from mcp_server.models import HealthModel
from store.acks import record_ack
from store.db import open_reader
from store.errors import InvalidQueryError
from store.health import Finding, GpuHealth, node_health
from store.metrics import get_metric
from store.queries import MAX_PAGE, XidFilter, list_xids
from store.records import Series, StoredXid
from store.series import metric_series
from store.windows import format_ts, parse_instant_ms
from watcher.clock import now_ms

__all__ = ["ack", "health", "health_lines", "trend"]


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
    as_json: Annotated[bool, typer.Option("--json", help="Buckets as JSON.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Buckets as CSV.")] = False,
    list_metrics: Annotated[
        bool, typer.Option("--list-metrics", help="List metric names and exit.")
    ] = False,
) -> None:
    """A metric over time per GPU: a chart, min/avg/max, slope per hour, XIDs marked."""
    if list_metrics:
        typer.echo(list_metrics_text())
        return
    if as_json and as_csv:
        raise InvalidQueryError("choose one of --json and --csv")
    m = get_metric(metric)
    now = now_ms()
    since_ms = parse_instant_ms(since, now_ms=now)
    until_ms = parse_instant_ms(until, now_ms=now) if until else now
    series, xids = asyncio.run(
        _trend_data(db, metric, gpu or [], since_ms, until_ms, buckets, tier, now)
    )
    if as_json:
        typer.echo(json.dumps(trend_json(series, xids, m), indent=2))
    elif as_csv:
        typer.echo(trend_csv(series), nl=False)
    else:
        width = max(20, min(120, shutil.get_terminal_size().columns - 4))
        typer.echo(render_trend(series, xids, metric=m, width=width))


async def _trend_data(
    db: Path,
    metric: str,
    gpus: list[str],
    since_ms: int,
    until_ms: int,
    buckets: int,
    tier: str | None,
    now: int,
) -> tuple[list[Series], list[StoredXid]]:
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
        )
        pcis = [s.pci_bus_id for s in series]
        page = await list_xids(
            conn,
            XidFilter(since_ms=since_ms, until_ms=until_ms, pci_bus_ids=pcis),
            limit=MAX_PAGE,
        )
    finally:
        await conn.close()
    return series, list(page.events)


def health(
    db: DbOption = DEFAULT_DB,
    since: Annotated[str, typer.Option(help="How far back XIDs count against a GPU.")] = "24h",
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of lines.")] = False,
) -> None:
    """One line per GPU: its latest readings and what is wrong, if anything."""
    if as_json:
        now = now_ms()
        results = asyncio.run(_health(db, parse_instant_ms(since, now_ms=now), now))
        models = [HealthModel.from_health(h).model_dump(mode="json") for h in results]
        typer.echo(json.dumps(models, indent=2))
    else:
        typer.echo(asyncio.run(health_lines(db, since=since)))


async def health_lines(db: Path, *, since: str = "24h") -> str:
    """``xidwatch health``'s text: a line per GPU, or why there is none."""
    now = now_ms()
    results = await _health(db, parse_instant_ms(since, now_ms=now), now)
    if not results:
        return f"no GPUs in {db}: is the daemon sampling NVML (xidwatch run)?"
    return "\n".join(_health_line(h) for h in results)


async def _health(db: Path, since_ms: int, now: int) -> list[GpuHealth]:
    conn = await open_reader(db)
    try:
        return await node_health(conn, since_ms=since_ms, now_ms=now)
    finally:
        await conn.close()


def _health_line(h: GpuHealth) -> str:
    s = h.sample
    readings = "no sample"
    if s is not None:
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
        readings = " ".join(parts) or "no readings"
    index = f"{h.gpu.info.index:<2}" if h.gpu else "- "
    name = h.gpu.info.name[:22] if h.gpu else "(seen only in XID lines)"
    why = "; ".join(_finding_text(f) for f in h.findings if f.severity != "info")
    line = f"GPU {index} {h.pci_bus_id}  {name:<22} {readings:<34} {h.status.upper()} ({h.score})"
    return f"{line}: {why}" if why else line


def _finding_text(f: Finding) -> str:
    return f"{f.message} -> {f.action}" if f.action else f.message


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

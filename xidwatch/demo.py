"""``xidwatch demo``: the one-command tour, on any machine, no GPU or root needed.

It replays a bundled incident capture into a fresh store, then runs the real daemon on
simulated GPUs (behind the real pynvml) while a scripted scenario heats one GPU until it
falls off the bus, printing each XID as it is stored and where its MCP endpoint and
metrics are served, and ends with the GPUs' health, a temperature trend with the XIDs
marked, and the commands to try next. Ctrl-C during the live part stops the daemon
cleanly and the tour goes on to what the store kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from mcp_server.http import HttpService
from mcp_server.http_settings import HttpSettings
from store.actions import code_action
from store.db import open_reader
from store.queries import XidFilter, list_xids, summarize_xids
from store.records import StoredXid
from store.series import metric_series
from store.telemetry import get_metric
from watcher.clock import now_ms
from watcher.config import DaemonConfig, KubernetesConfig, SimulationSpec
from watcher.daemon import Daemon
from watcher.kernel.catalog import default_catalog
from watcher.replayer import replay_captures
from xidwatch import serving
from xidwatch.charts import render_trend
from xidwatch.signals import stop_on_signal
from xidwatch.telemetry import health_lines

__all__ = ["demo"]

SCENARIO = "thermal-runaway"


def demo(
    db: Annotated[
        Path | None, typer.Option(help="Store file (default: a new temporary one).")
    ] = None,
    scenario: Annotated[
        str, typer.Option(help="Bundled scenario or YAML file to play on the simulated GPUs.")
    ] = SCENARIO,
    gpus: Annotated[int, typer.Option(min=1, max=16, help="Simulated GPUs.")] = 4,
    speed: Annotated[
        float, typer.Option(min=0.1, help="Scenario time runs this many times faster.")
    ] = 8.0,
    duration: Annotated[
        float | None,
        typer.Option(min=0.0, help="Seconds of live daemon (default: the scenario's length)."),
    ] = None,
) -> None:
    """A tour: replay a sample incident, run the daemon on simulated GPUs, show what it kept."""
    path = db or Path(tempfile.mkdtemp(prefix="xidwatch-demo-")) / "xidwatch.db"
    sample = resources.files("watcher.kernel").joinpath("data/sample-kern.log")
    with resources.as_file(sample) as sample_path:
        typer.echo(f"1. Replaying a sample incident capture ({sample_path.name}) into {path}")
        result = asyncio.run(replay_captures([sample_path], path, node="gpu-node-17"))
    typer.echo(
        f"   {result.lines} kernel log lines -> {result.events} XID lines -> "
        f"{result.stored} events stored, {result.folded} folded into bursts (counts stay exact)\n"
    )
    spec = SimulationSpec(gpus, scenario=scenario, speed=speed)
    started_ms = now_ms()
    asyncio.run(_live(path, spec, duration))
    typer.echo("\n3. GPU health now (xidwatch health):")
    typer.echo(asyncio.run(health_lines(path)))
    typer.echo("\n4. Temperature while the scenario ran (xidwatch trend):")
    typer.echo(asyncio.run(_trend(path, started_ms)))
    typer.echo("\n5. XIDs the store holds (summary by code and GPU):")
    typer.echo(asyncio.run(_summary(path)))
    typer.echo("\nTry next:")
    prog = "xidwatch" if shutil.which("xidwatch") else os.path.relpath(sys.argv[0])
    for cmd in (
        f"{prog} health --db {path}",
        f"{prog} trend --db {path} --metric temperature --since 10m",
        f"{prog} trend --db {path} --metric power --since 10m --json",
        f"{prog} xids --db {path} --since 365d",
        f"{prog} explain 79",
        f"{prog} run --simulate 8 --scenario ecc-degradation --db /tmp/sim.db",
        f"{prog} gateway --node sim=http://127.0.0.1:9607   # beside that run: the cluster view",
    ):
        typer.echo(f"  {cmd}")


async def _live(path: Path, spec: SimulationSpec, duration: float | None) -> None:
    config = DaemonConfig(
        db_path=path,
        node="demo-node",
        simulate=spec,
        kubernetes=KubernetesConfig(enabled=False),  # simulated GPUs belong to no pod
        sample_interval_s=1.0,
        checkpoint_interval_s=0.2,
    )
    daemon = Daemon(config)
    http = serving.http_service(daemon, HttpSettings("127.0.0.1", 0))
    with stop_on_signal() as stop:  # Ctrl-C ends the live part; the tour goes on
        task = asyncio.create_task(daemon.run(stop, services=[http]))
        ready = asyncio.create_task(daemon.ready.wait())
        await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
        if task.done():  # it failed before it was ready: say why
            ready.cancel()
            await task
            return
        await _tour(daemon, http, spec, duration, stop)
        stop.set()
        await task
    s, p = daemon.writer.stats, daemon.pipeline.stats
    typer.echo(
        f"   daemon stored {s.samples_stored} samples and {s.events_stored} XID events live; "
        f"{p.nvml_merged} NVML XID events matched their kernel log line"
    )


async def _tour(
    daemon: Daemon,
    http: HttpService,
    spec: SimulationSpec,
    duration: float | None,
    stop: asyncio.Event,
) -> None:
    """Say what runs and where it is served, then print XIDs as stored until done or Ctrl-C."""
    sim = daemon.simulation
    assert sim is not None and sim.scenario is not None
    scenario = sim.scenario
    seconds = duration if duration is not None else scenario.duration_s / spec.speed + 2.0
    typer.echo(
        f"2. Running the node daemon for {seconds:.0f}s on {len(sim.fleet.gpus)} simulated "
        f"{sim.fleet.gpus[0].profile.name} GPUs, scenario {scenario.name!r} at {spec.speed:g}x:"
    )
    typer.echo(f"   {scenario.description.strip().splitlines()[0]}")
    await http.wait_started()
    base = f"http://127.0.0.1:{http.bound_port}"
    typer.echo(f"   MCP (streamable HTTP) while it runs: {base}/mcp")
    typer.echo(f"   Prometheus metrics: {base}/metrics   (Ctrl-C stops early)")
    await _watch(daemon.config.db_path, seconds, stop)
    if stop.is_set():
        typer.echo("   interrupted: stopping the daemon (the queue drains, the store commits)")


async def _watch(path: Path, seconds: float, stop: asyncio.Event) -> None:
    """Print XIDs as the daemon stores them (read back from the store, like any reader)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    last_id = 0
    catalog = default_catalog()
    while loop.time() < deadline and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), min(0.5, max(0.0, deadline - loop.time())))
        conn = await open_reader(path)
        try:
            page = await list_xids(conn, XidFilter(since_ms=now_ms() - 600_000), limit=50)
        finally:
            await conn.close()
        for e in reversed(page.events):
            if e.id > last_id and e.node == "demo-node":
                info = catalog.lookup(e.xid, e.kind)
                typer.echo(
                    f"   stored: XID {e.xid:<3} GPU {e.pci_bus_id}  "
                    f"{code_action(e.xid, e.action, e.message):<19} {info.title}"
                )
        last_id = max([last_id, *(e.id for e in page.events)])


async def _trend(path: Path, since_ms: int) -> str:
    conn = await open_reader(path)
    now = now_ms()
    try:
        # About one 1 s sample per bucket, so the chart has no gaps.
        buckets = max(10, min(60, (now - since_ms) // 1000))
        series = await metric_series(
            conn, "temperature", since_ms=since_ms, until_ms=now, buckets=buckets, now_ms=now
        )
        xids = (await list_xids(conn, XidFilter(since_ms=since_ms), limit=500)).events
    finally:
        await conn.close()
    return render_trend(series, list(xids), metric=get_metric("temperature"), width=60)


async def _summary(path: Path) -> str:
    conn = await open_reader(path)
    try:
        summary = await summarize_xids(conn, XidFilter())
        latest: list[StoredXid] = list((await list_xids(conn, XidFilter(), limit=1)).events)
    finally:
        await conn.close()
    catalog = default_catalog()
    lines = [f"   {'XID':>6}  {'GPU':<16}  {'COUNT':>5}  {'NEEDS ON ITS OWN':<20}  WHAT"]
    for row in summary.rows:
        title = catalog.lookup(row.xid, row.kind).title
        label = f"{'S' if row.kind == 'sxid' else ''}{row.xid}"
        needs = code_action(row.xid, row.action)
        lines.append(
            f"   {label:>6}  {row.pci_bus_id or '-':<16}  {row.count:>5}  {needs:<20}  {title}"
        )
    lines.append(f"   total {summary.total} events; newest id {latest[0].id if latest else '-'}")
    return "\n".join(lines)

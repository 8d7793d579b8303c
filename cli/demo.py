"""``xidwatch demo``: the one-command tour, on any machine, no GPU or root needed.

It replays a bundled incident capture into a fresh store, then runs the real daemon for a
few seconds on an in-memory /dev/kmsg while a scripted scenario prints XIDs into it, and
shows what was stored and the commands to try next.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from store.db import open_reader
from store.queries import XidFilter, list_xids, summarize_xids
from store.records import StoredXid
from watcher.catalog import default_catalog
from watcher.clock import boot_wall_ms, now_ms, read_boot_id
from watcher.config import DaemonConfig
from watcher.daemon import Daemon, HostFacts
from watcher.ingest import replay_captures
from watcher.kmsgdev import MemoryKmsgDevice

__all__ = ["SCENARIO", "demo"]

# (seconds into the live phase, kernel message) — noise and XIDs, as the driver prints them.
SCENARIO: tuple[tuple[float, str], ...] = (
    (0.2, "cni0: port 2(veth1c9e2d1a) entered forwarding state"),
    (0.5, "NVRM: Xid (PCI:0000:3b:00): 13, pid=52011, name=python3, Graphics SM Warp Exception"),
    (0.6, "NVRM: Xid (PCI:0000:3b:00): 43, pid=52011, name=python3, Ch 00000010"),
    (1.2, "NVRM: Xid (PCI:0000:d8:00): 94, pid=52077, name=python3, Contained: SM (0x1)."),
    (1.8, "NVRM: Xid (PCI:0000:86:00): 79, pid=52100, name=trainer, GPU has fallen off the bus."),
    (1.8, "NVRM: GPU 0000:86:00.0: GPU has fallen off the bus."),
    (2.4, "pcieport 0000:85:00.0: AER: Uncorrected (Fatal) error received: 0000:85:00.0"),
)


def demo(
    db: Annotated[
        Path | None, typer.Option(help="Store file (default: a new temporary one).")
    ] = None,
    duration: Annotated[float, typer.Option(min=0.0, help="Seconds of live daemon.")] = 3.0,
) -> None:
    """A tour: replay a sample incident, run the daemon live on a scripted scenario, show it."""
    path = db or Path(tempfile.mkdtemp(prefix="xidwatch-demo-")) / "xidwatch.db"
    sample = resources.files("watcher").joinpath("data/sample-kern.log")
    with resources.as_file(sample) as sample_path:
        typer.echo(f"1. Replaying a sample incident capture ({sample_path.name}) into {path}")
        result = asyncio.run(replay_captures([sample_path], path, node="gpu-node-17"))
    typer.echo(
        f"   {result.lines} kernel log lines -> {result.events} XID lines -> "
        f"{result.stored} events stored, {result.folded} folded into bursts (counts stay exact)\n"
    )
    typer.echo(f"2. Running the node daemon for {duration:g}s on an in-memory /dev/kmsg")
    asyncio.run(_live(path, duration))
    typer.echo("")
    typer.echo("3. What the store holds now (summary by code and GPU):")
    typer.echo(asyncio.run(_summary(path)))
    typer.echo("\nTry next:")
    prog = "xidwatch" if shutil.which("xidwatch") else os.path.relpath(sys.argv[0])
    for cmd in (
        f"{prog} xids --db {path} --since 365d",
        f"{prog} xids --db {path} --since 365d --code 79 --json",
        f"{prog} explain 79",
        f"{prog} explain 48",
    ):
        typer.echo(f"  {cmd}")


async def _live(path: Path, duration: float) -> None:
    device = MemoryKmsgDevice()
    boot_ms = boot_wall_ms()
    host = HostFacts(
        boot_id=f"demo-{read_boot_id()}", boot_wall_ms=lambda: boot_ms, open_kmsg=device.reopen
    )
    daemon = Daemon(DaemonConfig(db_path=path, node="demo-node"), host=host)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    await daemon.ready.wait()
    started = time.monotonic()
    for at_s, text in SCENARIO:
        if at_s > duration:
            break
        await asyncio.sleep(max(0.0, at_s - (time.monotonic() - started)))
        device.write(text, ts_usec=(now_ms() - boot_ms) * 1000)
        if "Xid" in text:
            typer.echo(f"   kernel: {text}")
    await asyncio.sleep(max(0.0, duration - (time.monotonic() - started)))
    stop.set()
    await task
    device.dispose()
    s = daemon.writer.stats
    typer.echo(
        f"   daemon stored {s.events_stored} events live ({daemon.pipeline.stats.implied_merged} "
        "duplicate 'fallen off the bus' lines merged into their XID 79)"
    )


async def _summary(path: Path) -> str:
    conn = await open_reader(path)
    try:
        summary = await summarize_xids(conn, XidFilter())
        latest: list[StoredXid] = list((await list_xids(conn, XidFilter(), limit=1)).events)
    finally:
        await conn.close()
    catalog = default_catalog()
    lines = [f"   {'XID':>6}  {'GPU':<16}  {'COUNT':>5}  {'ACTION':<22}  WHAT"]
    for row in summary.rows:
        title = catalog.lookup(row.xid, row.kind).title
        label = f"{'S' if row.kind == 'sxid' else ''}{row.xid}"
        lines.append(
            f"   {label:>6}  {row.pci_bus_id or '-':<16}  {row.count:>5}  {row.action:<22}  {title}"
        )
    lines.append(f"   total {summary.total} events; newest id {latest[0].id if latest else '-'}")
    return "\n".join(lines)

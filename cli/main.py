"""The ``xidwatch`` command: one typer app; each command is a thin shell over the packages."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from cli import demo as demo_cmd
from cli import serving, telemetry
from cli.options import DEFAULT_DB, DbOption
from cli.render import event_json, explain_json, explain_text, xid_table
from mcp_server.http import HttpService
from store.db import open_reader
from store.errors import InvalidQueryError, XidwatchError
from store.flood import FloodPolicy
from store.queries import MAX_PAGE, XidFilter, list_xids
from store.records import EventKind, StoredXid
from store.retention import RetentionPolicy
from store.windows import parse_duration_ms, parse_instant_ms
from watcher.catalog import default_catalog
from watcher.clock import now_ms
from watcher.config import DaemonConfig, SimulationSpec
from watcher.daemon import Daemon
from watcher.ingest import replay_captures
from watcher.logs import configure_logging
from watcher.xid import normalize_pci

__all__ = ["app", "main"]

app = typer.Typer(
    name="xidwatch",
    help="Record NVIDIA XID errors and GPU telemetry on a node, and answer questions about them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _setup(
    log_level: Annotated[
        str, typer.Option(envvar="XIDWATCH_LOG_LEVEL", help="debug, info, warning or error.")
    ] = "info",
    log_json: Annotated[
        bool | None,
        typer.Option("--log-json/--log-console", help="Log format; default JSON unless a TTY."),
    ] = None,
) -> None:
    configure_logging(log_level, json=log_json)


@app.command()
def run(
    db: DbOption = DEFAULT_DB,
    node: Annotated[
        str | None, typer.Option(envvar="XIDWATCH_NODE", help="Node name; default hostname.")
    ] = None,
    kmsg: Annotated[bool, typer.Option("--kmsg/--no-kmsg", help="Read /dev/kmsg.")] = True,
    kmsg_path: Annotated[Path, typer.Option(envvar="XIDWATCH_KMSG_PATH")] = Path("/dev/kmsg"),
    kmsg_any_facility: Annotated[
        bool,
        typer.Option(
            envvar="XIDWATCH_KMSG_ANY_FACILITY",
            help="Also accept records user space wrote to /dev/kmsg "
            "(tests only: lets root forge XIDs).",
        ),
    ] = False,
    log_file: Annotated[
        list[Path] | None, typer.Option(help="Also tail this kernel log file (repeatable).")
    ] = None,
    log_file_from_start: Annotated[
        bool, typer.Option(help="Read tailed files from their start the first time.")
    ] = False,
    nvml: Annotated[
        bool, typer.Option("--nvml/--no-nvml", help="Sample GPUs through NVML.")
    ] = True,
    sample_interval: Annotated[
        float,
        typer.Option(
            envvar="XIDWATCH_SAMPLE_INTERVAL", min=1.0, help="Seconds between NVML samples."
        ),
    ] = 10.0,
    simulate: Annotated[
        int,
        typer.Option(
            min=0,
            max=64,
            help="Run N simulated GPUs (behind the real pynvml) and an in-memory kernel log "
            "instead of the host's.",
        ),
    ] = 0,
    simulate_model: Annotated[
        str | None, typer.Option(help="Simulated GPU model: H100-80GB, A100-80GB or T4.")
    ] = None,
    scenario: Annotated[
        str | None,
        typer.Option(help="With --simulate: a bundled scenario name or a scenario YAML file."),
    ] = None,
    scenario_speed: Annotated[
        float, typer.Option(min=0.01, help="Scenario time runs this many times faster.")
    ] = 1.0,
    retention_raw: Annotated[
        str, typer.Option(help="Keep raw samples this long (e.g. 48h).")
    ] = "48h",
    retention_1m: Annotated[str, typer.Option(help="Keep 1-minute rollups this long.")] = "30d",
    retention_1h: Annotated[str, typer.Option(help="Keep 1-hour rollups this long.")] = "400d",
    listen: Annotated[
        str | None,
        typer.Option(
            envvar="XIDWATCH_LISTEN",
            help="HOST:PORT for /mcp, /metrics, /healthz and /readyz (port 0: any free port).",
        ),
    ] = "127.0.0.1:9400",
    http: Annotated[bool, typer.Option("--http/--no-http", help="Serve the HTTP port.")] = True,
    auth_token_file: Annotated[
        Path | None,
        typer.Option(envvar="XIDWATCH_AUTH_TOKEN_FILE", help="Require this bearer token on /mcp."),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            envvar="XIDWATCH_ALLOWED_HOSTS",
            help="Extra Host header names MCP accepts (Service name, pod IP); repeatable.",
        ),
    ] = None,
    flood_burst: Annotated[
        int, typer.Option(min=1, help="Individual rows per GPU and code before folding.")
    ] = 20,
    flood_per_minute: Annotated[
        float,
        typer.Option(
            min=0.0, help="Individual rows per GPU and code per minute after that; 0 = never fold."
        ),
    ] = 6.0,
) -> None:
    """Run the node daemon: record every XID and sample every GPU until SIGTERM."""
    if scenario and not simulate:
        raise InvalidQueryError("--scenario needs --simulate N (scenarios drive simulated GPUs)")
    config = DaemonConfig(
        db_path=db,
        kmsg=kmsg,
        kmsg_path=kmsg_path,
        kmsg_any_facility=kmsg_any_facility,
        log_files=tuple(log_file or ()),
        log_files_from_start=log_file_from_start,
        flood=FloodPolicy(burst=flood_burst, per_minute=flood_per_minute),
        nvml=nvml or simulate > 0,
        sample_interval_s=sample_interval,
        simulate=SimulationSpec(simulate, simulate_model, scenario, scenario_speed)
        if simulate
        else None,
        retention=RetentionPolicy(
            raw_ms=parse_duration_ms(retention_raw),
            minute_ms=parse_duration_ms(retention_1m),
            hour_ms=parse_duration_ms(retention_1h),
        ),
    )
    if node:
        config = replace(config, node=node)
    daemon = Daemon(config)
    services = (
        [
            serving.http_service(
                daemon,
                listen or "",
                token_file=auth_token_file,
                extra_hosts=list(allowed_host or ()),
            )
        ]
        if http and listen
        else []
    )
    asyncio.run(_run_daemon(daemon, services))


async def _run_daemon(daemon: Daemon, services: list[HttpService]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await daemon.run(stop, services=services)


@app.command()
def replay(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Captures: dmesg, dmesg -T, raw kmsg, syslog (.gz too).",
            exists=True,
            dir_okay=False,
        ),
    ],
    db: DbOption = DEFAULT_DB,
    node: Annotated[str, typer.Option(help="Node name to record with the events.")] = "",
    boot_time: Annotated[
        str | None,
        typer.Option(
            help="When the captured machine booted (ISO 8601), to date dmesg's "
            "seconds-since-boot stamps. Default: this machine's boot."
        ),
    ] = None,
) -> None:
    """Ingest saved kernel log captures; replaying the same capture again stores nothing new."""
    from watcher.clock import boot_wall_ms

    boot_ms = parse_instant_ms(boot_time, now_ms=now_ms()) if boot_time else boot_wall_ms()
    result = asyncio.run(replay_captures(files, db, node=node, boot_wall_ms=boot_ms))
    folded = f", {result.folded} folded into bursts" if result.folded else ""
    dupes = f", {result.duplicates} already stored" if result.duplicates else ""
    typer.echo(
        f"stored {result.stored} events from {result.lines} lines "
        f"({result.events} XID/SXid lines{folded}{dupes}) into {db}"
    )


@app.command()
def xids(
    db: DbOption = DEFAULT_DB,
    since: Annotated[str, typer.Option(help="Window start: 24h, 7d, or an ISO time.")] = "24h",
    until: Annotated[str | None, typer.Option(help="Window end (default now).")] = None,
    gpu: Annotated[
        list[str] | None, typer.Option(help="PCI bus id, e.g. 0000:3b:00.0 (repeatable).")
    ] = None,
    code: Annotated[list[int] | None, typer.Option(help="XID code (repeatable).")] = None,
    action: Annotated[
        list[str] | None, typer.Option(help="Catalog action, e.g. RESET_GPU (repeatable).")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="xid or sxid.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_PAGE)] = 200,
    as_json: Annotated[
        bool, typer.Option("--json", help="A JSON array instead of a table.")
    ] = False,
) -> None:
    """List stored XID events, newest first. Bursts show their exact count."""
    now = now_ms()
    filters = XidFilter(
        since_ms=parse_instant_ms(since, now_ms=now),
        until_ms=parse_instant_ms(until, now_ms=now) if until else None,
        pci_bus_ids=[_gpu(g) for g in gpu or ()],
        codes=list(code or ()),
        actions=[a.upper() for a in action or ()],
        kind=_kind(kind),
    )
    events = asyncio.run(_list(db, filters, limit))
    catalog = default_catalog()
    if as_json:
        typer.echo(json.dumps([event_json(e, catalog) for e in events], indent=2))
    elif events:
        typer.echo(xid_table(events, catalog))
    else:
        typer.echo(f"no XID events since {since} in {db}")


async def _list(db: Path, filters: XidFilter, limit: int) -> list[StoredXid]:
    conn = await open_reader(db)
    try:
        return list((await list_xids(conn, filters, limit=limit)).events)
    finally:
        await conn.close()


def _gpu(text: str) -> str:
    try:
        return normalize_pci(text.strip())
    except ValueError as e:
        raise InvalidQueryError(f"--gpu {text!r}: give a PCI bus id like 0000:3b:00.0") from e


def _kind(text: str | None) -> EventKind | None:
    if text is None:
        return None
    if text not in ("xid", "sxid"):
        raise InvalidQueryError(f"--kind {text!r}: use xid or sxid")
    return "xid" if text == "xid" else "sxid"


@app.command()
def explain(
    code: Annotated[int, typer.Argument(help="The XID (or, with --sxid, SXid) number.")],
    sxid: Annotated[bool, typer.Option(help="Explain an NVSwitch SXid.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """What an XID means and what to do about it, from the packaged catalog."""
    catalog = default_catalog()
    info = catalog.lookup(code, "sxid" if sxid else "xid")
    if as_json:
        typer.echo(json.dumps(explain_json(info, catalog), indent=2))
    else:
        typer.echo(explain_text(info, catalog))


app.command(name="demo")(demo_cmd.demo)
app.command(name="trend")(telemetry.trend)
app.command(name="health")(telemetry.health)
app.command(name="mcp")(serving.mcp)
app.command(name="ack")(telemetry.ack)


def main() -> None:
    """Console-script entry point: errors we raise on purpose print as one line, exit 2."""
    try:
        app()
    except XidwatchError as e:
        typer.echo(f"xidwatch: error: {e}", err=True)
        sys.exit(2)

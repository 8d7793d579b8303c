"""The ``xidwatch`` command: one typer app; each command is a thin shell over the packages."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from store.db import open_reader
from store.errors import InvalidQueryError, XidwatchError
from store.inventory import select_gpus
from store.queries import MAX_PAGE, XidFilter, list_xids
from store.records import EventKind, StoredXid
from store.windows import parse_instant_ms
from watcher.clock import now_ms
from watcher.kernel.catalog import default_catalog
from watcher.logs import configure_logging
from watcher.prometheus import installed_version
from watcher.replayer import replay_captures
from xidwatch import demo as demo_cmd
from xidwatch import gateway as gateway_cmd
from xidwatch import inject as inject_cmd
from xidwatch import run as run_cmd
from xidwatch import serving, telemetry
from xidwatch.conventions import XidwatchCommand, XidwatchGroup, error_line
from xidwatch.options import DEFAULT_DB, DbOption
from xidwatch.render import event_json, explain_json, explain_text, xid_table

__all__ = ["app", "main"]

MAX_CODE = 2**31 - 1  # XID and SXid codes are small; SQLite integers stop at 2**63 - 1

app = typer.Typer(
    name="xidwatch",
    cls=XidwatchGroup,
    help="Record NVIDIA XID errors and GPU telemetry on a node, and answer questions about them. "
    "The global options may also follow the command (xidwatch xids --log-level debug).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool | None) -> None:
    if value:
        typer.echo(f"xidwatch {installed_version()}")
        raise typer.Exit()


@app.callback()
def _setup(
    ctx: typer.Context,
    log_level: Annotated[
        str, typer.Option(envvar="XIDWATCH_LOG_LEVEL", help="debug, info, warning or error.")
    ] = "info",
    log_json: Annotated[
        bool | None,
        typer.Option("--log-json/--log-console", help="Log format; default JSON unless a TTY."),
    ] = None,
    version: Annotated[
        bool | None,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = None,
) -> None:
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise typer.BadParameter(
            f"{log_level!r}: use debug, info, warning or error", param_hint="--log-level"
        )
    if log_json is None and ctx.invoked_subcommand == "demo":
        log_json = False  # the tour is read by a person, even through a pipe
    configure_logging(log_level, json=log_json)


app.command(name="run", cls=XidwatchCommand)(run_cmd.run)


@app.command(cls=XidwatchCommand)
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
    from watcher.clock import stable_boot_wall_ms

    given = parse_instant_ms(boot_time, now_ms=now_ms()) if boot_time else None
    boot_ms = given if given is not None else stable_boot_wall_ms()
    result = asyncio.run(replay_captures(files, db, node=node, boot_wall_ms=boot_ms))
    folded = f", {result.folded} folded into bursts" if result.folded else ""
    dupes = f", {result.duplicates} already stored" if result.duplicates else ""
    typer.echo(
        f"stored {result.stored} events from {result.lines} lines "
        f"({result.events} XID/SXid lines{folded}{dupes}) into {db}"
    )


@app.command(cls=XidwatchCommand)
def xids(
    db: DbOption = DEFAULT_DB,
    since: Annotated[str, typer.Option(help="Window start: 24h, 7d, or an ISO time.")] = "24h",
    until: Annotated[str | None, typer.Option(help="Window end (default now).")] = None,
    gpu: Annotated[
        list[str] | None,
        typer.Option(
            help="GPU index, UUID or unique prefix, or PCI bus id in any spelling "
            "(0000:3b:00.0, 3b:00); repeatable."
        ),
    ] = None,
    code: Annotated[
        list[int] | None, typer.Option(min=0, max=MAX_CODE, help="XID code (repeatable).")
    ] = None,
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
        codes=list(code or ()),
        actions=[a.upper() for a in action or ()],
        kind=_kind(kind),
    )
    events = asyncio.run(_list(db, filters, list(gpu or ()), limit))
    catalog = default_catalog()
    if as_json:
        typer.echo(json.dumps([event_json(e, catalog) for e in events], indent=2))
    elif events:
        typer.echo(xid_table(events, catalog))
    else:
        typer.echo(f"no XID events since {since} in {db}")


async def _list(db: Path, filters: XidFilter, gpus: list[str], limit: int) -> list[StoredXid]:
    """The events, on the GPUs ``gpus`` name (the MCP tools' resolver) when there are any."""
    conn = await open_reader(db)
    try:
        if gpus:
            pcis = (await select_gpus(conn, gpus)).pci_bus_ids
            filters = replace(filters, pci_bus_ids=pcis)
        return list((await list_xids(conn, filters, limit=limit)).events)
    finally:
        await conn.close()


def _kind(text: str | None) -> EventKind | None:
    if text is None:
        return None
    if text not in ("xid", "sxid"):
        raise InvalidQueryError(f"--kind {text!r}: use xid or sxid")
    return "xid" if text == "xid" else "sxid"


@app.command(cls=XidwatchCommand)
def explain(
    code: Annotated[
        int,
        typer.Argument(
            min=0, max=MAX_CODE, metavar="CODE", help="The XID (or, with --sxid, SXid) number."
        ),
    ],
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


app.command(name="demo", cls=XidwatchCommand)(demo_cmd.demo)
app.command(name="inject", cls=XidwatchCommand)(inject_cmd.inject)
app.command(name="trend", cls=XidwatchCommand)(telemetry.trend)
app.command(name="health", cls=XidwatchCommand)(telemetry.health)
app.command(name="mcp", cls=XidwatchCommand)(serving.mcp)
app.command(name="gateway", cls=XidwatchCommand)(gateway_cmd.gateway)
app.command(name="ack", cls=XidwatchCommand)(telemetry.ack)


def main(args: list[str] | None = None) -> None:
    """Console-script entry point: every error is one line ``xidwatch: error: ...``, exit 2.

    A usage error (typer's), an error we raise on purpose (XidwatchError) and the host's
    refusals (a file that cannot be opened, SQLite saying no) alike; a bug still shows its
    traceback. ``health`` exits with its own status (see docs/cli.md).
    """
    try:
        status = app(args=args, standalone_mode=False)
    except typer.TyperException as e:  # a usage error: bad option, value or command
        typer.echo(error_line(e.format_message()), err=True)
        sys.exit(2)
    except typer.Abort:
        typer.echo("xidwatch: aborted", err=True)
        sys.exit(1)
    except (XidwatchError, OSError, sqlite3.Error) as e:
        typer.echo(error_line(str(e) or type(e).__name__), err=True)
        sys.exit(2)
    sys.exit(status if isinstance(status, int) else 0)
